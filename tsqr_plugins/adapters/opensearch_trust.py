"""The two ml-commons cluster settings a tsqr install needs, and how to give them back.

Pure functions over ``GET _cluster/settings?include_defaults=true&flat_settings=true``; the
installer sends what they return. Several tsqr installs can share a cluster (two names, one or two
service URLs), and an administrator may have trusted an endpoint or allowed private addresses
before any of them: each install records, in its connector, what the cluster held before the first
tsqr install and whether its endpoint regex was already there, so that an uninstall takes away only
what no other tsqr install needs and nobody else had set.

When ml-commons reads them (read in ml-commons 2.19.6.0 and 3.6.0.0/3.7.0.0):
- the trusted-endpoint regexes when a connector is created or updated (``Connector
  .validateConnectorURL``), and from 3.7.0.0 also at predict, from a copy taken at deploy;
- ``private_ip_enabled`` at every predict on 2.x (a shared flag), from a copy taken at deploy on
  3.4.0.0 and later. So both are set before the connector is created and the model deployed, and
  taking them away breaks the installs still using them (at once on 2.x, at their next deploy on
  3.4+, at predict on 3.7+).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

TRUSTED = "plugins.ml_commons.trusted_connector_endpoints_regex"
PRIVATE_IP = "plugins.ml_commons.connector.private_ip_enabled"
SCOPES = ("persistent", "transient")
Settings = dict[str, dict[str, Any]]  # scope (persistent | transient | defaults) -> flat settings


@dataclass(frozen=True)
class TrustRecord:
    """What one install needs, and what the cluster held before the first tsqr install."""

    regex: str                # this install's endpoint regex
    private: bool             # this install needs private_ip_enabled
    regex_preexisting: bool   # the regex was trusted before any tsqr install needed it
    before: dict              # {setting: {"persistent": v, "transient": v, "effective": v}}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "TrustRecord":
        """A record read back from a connector; ValueError unless every part has its shape."""
        if not isinstance(data, dict) or not isinstance(data.get("regex"), str) \
                or not all(isinstance(data.get(flag), bool) for flag in ("private", "regex_preexisting")):
            raise ValueError("not a tsqr install record")
        return cls(data["regex"], data["private"], data["regex_preexisting"], checked_before(data.get("before")))

    @classmethod
    def from_legacy(cls, before: dict, regex: str, private: bool) -> "TrustRecord":
        """A connector of an older tsqr, which kept only the settings it found (``tsqr_restore``);
        ``before`` is the earliest tsqr connector's, so that another older install's regex is not
        taken for the administrator's."""
        before = checked_before(before)
        return cls(regex, private, regex in (before[TRUSTED]["effective"] or []), before)


def checked_before(before: Any) -> dict:
    """What a record says the cluster held, checked for the shape ``snapshot`` writes."""
    if not isinstance(before, dict):
        raise ValueError("the recorded settings are not an object")
    for key in (TRUSTED, PRIVATE_IP):
        scopes = before.get(key)
        if not isinstance(scopes, dict):
            raise ValueError(f"the recorded settings lack {key}")
        values = [scopes.get(scope) for scope in (*SCOPES, "effective")]
        if key == TRUSTED and not all(v is None or (isinstance(v, list) and all(isinstance(r, str) for r in v))
                                      for v in values):
            raise ValueError(f"the recorded {key} is not a list of regexes")
        if key == PRIVATE_IP and not all(v is None or isinstance(v, (str, bool)) for v in values):
            raise ValueError(f"the recorded {key} is not a flag")
    return before


def effective(settings: Settings, key: str) -> tuple[str, Any]:
    """(the scope that decides, its value): transient overrides persistent overrides defaults."""
    for scope in ("transient", "persistent", "defaults"):
        if key in settings.get(scope, {}):
            return scope, settings[scope][key]
    return "defaults", None


def snapshot(settings: Settings) -> dict:
    return {key: {**{scope: settings.get(scope, {}).get(key) for scope in SCOPES}, "effective": effective(settings, key)[1]}
            for key in (TRUSTED, PRIVATE_IP)}


def _is_true(value: Any) -> bool:
    return str(value).lower() == "true"


def _writable(scope: str) -> str:
    """Where a change goes: the transient scope when it decides, else the persistent one."""
    return "transient" if scope == "transient" else "persistent"


def plan_trust(settings: Settings, regex: str, private: bool,
               others: list[TrustRecord]) -> tuple[dict[str, dict], TrustRecord]:
    """The ``PUT _cluster/settings`` body ({} when nothing changes) for an install needing
    ``regex`` (and private addresses), beside the tsqr installs ``others``; and its record."""
    before = others[0].before if others else snapshot(settings)
    scope, regexes = effective(settings, TRUSTED)
    regexes = list(regexes or [])
    sharing = [other for other in others if other.regex == regex]
    # a regex another tsqr install added is tsqr's, not the administrator's
    preexisting = sharing[0].regex_preexisting if sharing else regex in regexes
    update: dict[str, dict] = {}
    if regex not in regexes:
        update.setdefault(_writable(scope), {})[TRUSTED] = regexes + [regex]
    if private:
        scope, enabled = effective(settings, PRIVATE_IP)
        if not _is_true(enabled):
            update.setdefault(_writable(scope), {})[PRIVATE_IP] = True
    return update, TrustRecord(regex, private, preexisting, before)


def plan_untrust(settings: Settings, record: TrustRecord, others: list[TrustRecord]) -> dict[str, dict]:
    """The ``PUT _cluster/settings`` body that takes away what ``record``'s install added and no
    install in ``others`` (the tsqr installs that stay) needs; {} when nothing changes."""
    update: dict[str, dict] = {}
    if not record.regex_preexisting and not any(other.regex == record.regex for other in others):
        recorded = record.before.get(TRUSTED) or {}
        for scope in SCOPES:
            current = settings.get(scope, {}).get(TRUSTED)
            if not isinstance(current, list) or record.regex not in current:
                continue
            remaining = [regex for regex in current if regex != record.regex]
            # Unset again (not a pinned copy of the defaults) when tsqr set it and nothing else changed since.
            unset = recorded.get(scope) is None and remaining == list(recorded.get("effective") or [])
            update.setdefault(scope, {})[TRUSTED] = None if unset else remaining
    if record.private and not any(other.private for other in others):
        recorded = record.before.get(PRIVATE_IP) or {}
        for scope in SCOPES:
            current = settings.get(scope, {}).get(PRIVATE_IP)
            if _is_true(current) and current != recorded.get(scope):
                update.setdefault(scope, {})[PRIVATE_IP] = recorded.get(scope)
    return update
