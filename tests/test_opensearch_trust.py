"""The cluster-settings bookkeeping of `tsqr opensearch install/uninstall`, without a node: settings
are simulated as ``PUT _cluster/settings`` applies them (a null value unsets; the ``defaults`` scope
lists only what no scope sets), so a run without engines still guards what the live lifecycle test
(test_opensearch_lifecycle_live.py) checks on real nodes."""

from __future__ import annotations

import copy
import json
import random

import pytest

from tsqr_plugins.adapters.opensearch_trust import PRIVATE_IP, TRUSTED, TrustRecord, plan_trust, plan_untrust

# ml-commons 2.19.6.0 MLCommonsSettings: the trusted list defaults to cloud endpoints; private off.
DEFAULTS = {TRUSTED: ["^https://api\\.openai\\.com/.*$", "^https://api\\.cohere\\.ai/.*$"], PRIVATE_IP: "false"}
LOCAL = "^http://127\\.0\\.0\\.1:8000/v1/rewrite$"
OTHER = "^http://10\\.0\\.0\\.7:8000/v1/rewrite$"
PUBLIC = "^https://rewriter\\.example\\.com/v1/rewrite$"
ADMIN = "^https://admins-own\\.example\\.com/.*$"


class Cluster:
    """Flat cluster settings as GET _cluster/settings?include_defaults=true shows them."""

    def __init__(self, persistent: dict | None = None, transient: dict | None = None):
        self.scopes = {"persistent": dict(persistent or {}), "transient": dict(transient or {})}

    def get(self) -> dict:
        shown = {scope: {k: (copy.copy(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else v)
                         for k, v in values.items()} for scope, values in self.scopes.items()}
        shown["defaults"] = {k: copy.copy(v) for k, v in DEFAULTS.items()
                             if not any(k in values for values in self.scopes.values())}
        return shown

    def put(self, body: dict) -> None:
        for scope, values in body.items():
            for key, value in values.items():
                if value is None:
                    self.scopes[scope].pop(key, None)
                else:
                    self.scopes[scope][key] = str(value).lower() if isinstance(value, bool) else value

    def effective(self, key: str):
        for scope in ("transient", "persistent"):
            if key in self.scopes[scope]:
                return self.scopes[scope][key]
        return DEFAULTS[key]


class Installs:
    """tsqr installs on one simulated cluster: name -> its record, as the connectors keep them."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.records: dict[str, TrustRecord] = {}

    def install(self, name: str, regex: str, private: bool) -> None:
        # as the installer does: every tsqr connector on the cluster, this name's old one included
        update, record = plan_trust(self.cluster.get(), regex, private, list(self.records.values()))
        others = [r for n, r in self.records.items() if n != name]
        self.cluster.put(update)
        if name in self.records:  # a reinstall: the old connector goes once the new one stands
            old = self.records.pop(name)
            self.cluster.put(plan_untrust(self.cluster.get(), old, others + [record]))
        self.records[name] = record

    def uninstall(self, name: str) -> None:
        record = self.records.pop(name)
        self.cluster.put(plan_untrust(self.cluster.get(), record, list(self.records.values())))

    def assert_each_works(self) -> None:
        trusted = self.cluster.effective(TRUSTED)
        for name, record in self.records.items():
            assert record.regex in trusted, f"{name} lost its trusted endpoint"
            if record.private:
                assert str(self.cluster.effective(PRIVATE_IP)).lower() == "true", f"{name} lost private_ip_enabled"


def test_first_install_trusts_the_endpoint_beside_the_defaults_and_uninstall_unsets_again():
    cluster = Cluster()
    installs = Installs(cluster)
    installs.install("tsqr", LOCAL, private=True)
    assert cluster.scopes["persistent"][TRUSTED] == DEFAULTS[TRUSTED] + [LOCAL]  # the defaults kept
    assert cluster.scopes["persistent"][PRIVATE_IP] == "true"
    installs.uninstall("tsqr")
    assert cluster.scopes == {"persistent": {}, "transient": {}}  # unset, not a pinned copy of the defaults


def test_a_second_install_on_the_same_url_keeps_working_after_the_first_is_removed():
    """The defect: the first uninstall took the regex and private_ip_enabled from the second."""
    cluster = Cluster()
    installs = Installs(cluster)
    installs.install("a", LOCAL, private=True)
    installs.install("b", LOCAL, private=True)
    installs.uninstall("a")
    installs.assert_each_works()
    installs.uninstall("b")
    assert cluster.scopes == {"persistent": {}, "transient": {}}


def test_a_regex_the_administrator_had_stays():
    cluster = Cluster(persistent={TRUSTED: DEFAULTS[TRUSTED] + [LOCAL, ADMIN], PRIVATE_IP: True})
    before = copy.deepcopy(cluster.scopes)
    installs = Installs(cluster)
    installs.install("a", LOCAL, private=True)
    installs.install("b", LOCAL, private=True)
    installs.uninstall("b")
    installs.uninstall("a")
    assert cluster.scopes == before


def test_the_transient_scope_is_changed_where_it_decides():
    cluster = Cluster(transient={TRUSTED: [ADMIN]})
    installs = Installs(cluster)
    installs.install("a", PUBLIC, private=False)
    assert cluster.scopes["transient"][TRUSTED] == [ADMIN, PUBLIC] and TRUSTED not in cluster.scopes["persistent"]
    installs.uninstall("a")
    assert cluster.scopes == {"persistent": {}, "transient": {TRUSTED: [ADMIN]}}


def test_an_administrators_change_after_install_survives_uninstall():
    cluster = Cluster()
    installs = Installs(cluster)
    installs.install("a", LOCAL, private=True)
    cluster.put({"persistent": {TRUSTED: cluster.effective(TRUSTED) + [ADMIN]}})
    installs.uninstall("a")
    assert cluster.scopes["persistent"][TRUSTED] == DEFAULTS[TRUSTED] + [ADMIN]


def test_legacy_records_read_as_before():
    """A connector of an older tsqr kept only `tsqr_restore` (the settings it found)."""
    before = {TRUSTED: {"persistent": None, "transient": None, "effective": DEFAULTS[TRUSTED]},
              PRIVATE_IP: {"persistent": None, "transient": None, "effective": "false"}}
    record = TrustRecord.from_legacy(before, LOCAL, private=True)
    assert not record.regex_preexisting and TrustRecord.from_dict(record.to_dict()) == record


@pytest.mark.parametrize("seed", range(40))
def test_random_install_sequences_leave_the_cluster_as_found(seed):
    """Generated: installs and uninstalls of up to three names on two private URLs and a public one,
    reinstalls that change the URL, an administrator's own regex and private flag present or not.
    While an install stands, its settings hold; when the last is gone, the settings are as found."""
    rng = random.Random(seed)
    persistent = {}
    if rng.random() < 0.5:
        persistent[TRUSTED] = DEFAULTS[TRUSTED] + rng.sample([ADMIN, LOCAL], rng.randint(1, 2))
    if rng.random() < 0.3:
        persistent[PRIVATE_IP] = True
    cluster = Cluster(persistent=persistent)
    found = copy.deepcopy(cluster.get())
    installs = Installs(cluster)
    urls = [(LOCAL, True), (OTHER, True), (PUBLIC, False)]
    steps = []
    for _ in range(rng.randint(2, 12)):
        name = rng.choice("abc")
        if name in installs.records and rng.random() < 0.5:
            steps.append(f"uninstall {name}")
            installs.uninstall(name)
        else:
            regex, private = rng.choice(urls)
            steps.append(f"install {name} {regex}")
            installs.install(name, regex, private)
        installs.assert_each_works()
    for name in list(installs.records):
        steps.append(f"uninstall {name}")
        installs.uninstall(name)
    got = cluster.get()
    assert {s: got[s] for s in ("persistent", "transient")} == {s: found[s] for s in ("persistent", "transient")}, \
        f"seed {seed}: {steps}"


def test_key_digests_compare_without_errors():
    from tsqr_plugins.adapters.opensearch_install import key_digest, same_key

    stored = key_digest("s3cret")
    assert same_key(stored, "s3cret") and not same_key(stored, "other") and not same_key(stored, None)
    assert same_key("", None) and not same_key("", "s3cret")
    for damaged in ("é$1$00$00", "pbkdf2-sha256$999999999999$00$00", "pbkdf2-sha256$x$00$00", "garbage"):
        assert not same_key(damaged, "s3cret"), damaged  # never an error, never a long computation


def test_two_older_installs_on_one_url_are_read_against_the_first_ones_record():
    """An older tsqr kept, per connector, the settings it found; the second install found the
    first's regex and private flag and would call them the administrator's (found by review: the
    last uninstall then left both for good)."""
    from tsqr_plugins.adapters.opensearch_install import read_record

    first_found = {TRUSTED: {"persistent": None, "transient": None, "effective": DEFAULTS[TRUSTED]},
                   PRIVATE_IP: {"persistent": None, "transient": None, "effective": "false"}}
    second_found = {TRUSTED: {"persistent": DEFAULTS[TRUSTED] + [LOCAL], "transient": None,
                              "effective": DEFAULTS[TRUSTED] + [LOCAL]},
                    PRIVATE_IP: {"persistent": "true", "transient": None, "effective": "true"}}

    def legacy(found):
        return {"description": "x", "parameters": {"tsqr_restore": json.dumps(found)},
                "actions": [{"url": "http://127.0.0.1:8000/v1/rewrite", "request_body": '{"q": ${parameters.query}}'}]}

    first, _ = read_record(legacy(first_found), [])
    second, _ = read_record(legacy(second_found), [first.to_dict()])
    assert not first.regex_preexisting and not second.regex_preexisting
    cluster = Cluster(persistent={TRUSTED: DEFAULTS[TRUSTED] + [LOCAL], PRIVATE_IP: True})
    installs = Installs(cluster)
    installs.records = {"a": first, "b": second}
    installs.uninstall("a")
    installs.assert_each_works()
    installs.uninstall("b")
    assert cluster.scopes == {"persistent": {}, "transient": {}}


def test_private_addresses_are_allowed_where_the_transient_scope_decides_and_given_back_as_found():
    """An administrator's transient private_ip_enabled=false decides: the install turns it on there
    (a persistent true would not count), and the uninstall puts the administrator's false back."""
    cluster = Cluster(transient={PRIVATE_IP: False})
    installs = Installs(cluster)
    installs.install("a", LOCAL, private=True)
    assert cluster.scopes["transient"][PRIVATE_IP] == "true" and PRIVATE_IP not in cluster.scopes["persistent"]
    installs.uninstall("a")
    assert cluster.scopes == {"persistent": {}, "transient": {PRIVATE_IP: "false"}}


def test_a_legacy_record_whose_regex_was_trusted_before_calls_it_preexisting():
    before = {TRUSTED: {"persistent": DEFAULTS[TRUSTED] + [LOCAL], "transient": None, "effective": DEFAULTS[TRUSTED] + [LOCAL]},
              PRIVATE_IP: {"persistent": None, "transient": None, "effective": "false"}}
    assert TrustRecord.from_legacy(before, LOCAL, private=True).regex_preexisting
    assert not TrustRecord.from_legacy(before, OTHER, private=True).regex_preexisting


def test_a_record_that_is_not_of_the_shape_tsqr_writes_is_refused():
    """Records are read back from connectors anyone can write: each part is checked (a ValueError
    makes the installer leave that connector alone, saying so)."""
    before = {TRUSTED: {"persistent": None, "transient": None, "effective": DEFAULTS[TRUSTED]},
              PRIVATE_IP: {"persistent": None, "transient": None, "effective": "false"}}
    good = TrustRecord(LOCAL, True, False, before).to_dict()
    assert TrustRecord.from_dict(copy.deepcopy(good)) == TrustRecord(LOCAL, True, False, before)

    def with_before(key, scope, value):
        changed = copy.deepcopy(good)
        changed["before"][key][scope] = value
        return changed

    for bad in ([], "record", {**good, "regex": 1}, {**good, "private": "yes"}, {**good, "regex_preexisting": None},
                {**good, "before": []}, {**good, "before": {TRUSTED: before[TRUSTED]}},
                with_before(TRUSTED, "persistent", "^a$|^b$"), with_before(TRUSTED, "effective", [1]),
                with_before(TRUSTED, "transient", ["^a$", None]), with_before(PRIVATE_IP, "effective", 1),
                with_before(PRIVATE_IP, "persistent", ["true"])):
        with pytest.raises(ValueError):
            TrustRecord.from_dict(bad)
