"""Model access control (the security plugin with ``plugins.ml_commons.model_access_control_enabled``)
against tests/fake_ml_commons.py, whose every behaviour cites ml-commons' source: the security
plugin is not on Maven Central, so the real nodes cannot switch it on.

The defect: a model group registered without access fields is PRIVATE to the user who installed
(MLModelGroupManager), so every other user's predict is refused (403) and their pipeline searches
silently go unrewritten. Install makes the group public by default, restricted on request, and sends
no access field at all where access control is off (ml-commons refuses them there)."""

from __future__ import annotations

import pytest

from tests.fake_ml_commons import FakeNode, FakeUser, create_fake_node
from tsqr_plugins.errors import InputError

pytest.importorskip("uvicorn")

USERS = {"admin": FakeUser("admin", admin=True), "installer": FakeUser("installer", ("ml_full",)),
         "searcher": FakeUser("searcher", ("readers",)), "analyst": FakeUser("analyst", ("analysts",))}
SERVICE = "https://rewriter.example.com"


@pytest.fixture
def fake():
    from tsqr_plugins.testing.service import RunningApp

    def start(access_control: bool, security_active: bool = True):
        node = FakeNode(USERS, access_control=access_control, security_active=security_active)
        running = RunningApp(create_fake_node(node))
        running.__enter__()
        started.append(running)
        return node, running.url

    started = []
    yield start
    for running in started:
        running.__exit__(None, None, None)


def predict_as(url: str, user: str, model_id: str) -> int:
    import httpx

    return httpx.post(f"{url}/_plugins/_ml/models/{model_id}/_predict", auth=(user, "pw"),
                      json={"parameters": {"match": '{"query": "moths"}'}}).status_code


def install(url: str, user: str = "installer", **options) -> dict:
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller

    installer = OpenSearchInstaller(url, auth=(user, "pw"))
    try:
        return installer.install(SERVICE, "tsqr", index_template=False, **options)
    finally:
        installer.close()


def test_the_group_is_public_by_default_so_every_user_is_rewritten(fake):
    node, url = fake(access_control=True)
    installed = install(url)
    group = node.groups[installed["model_group_id"]]
    assert group["access"] == "public" and group["owner"] == "installer"
    assert predict_as(url, "searcher", installed["model_id"]) == 200


def test_without_access_fields_the_fake_makes_the_group_private_as_ml_commons_does(fake):
    """What the install did before: the searching user's predict is refused."""
    from tsqr_plugins import engine_configs as configs

    node, url = fake(access_control=True)
    import httpx

    auth = ("installer", "pw")
    group_id = httpx.post(f"{url}/_plugins/_ml/model_groups/_register", auth=auth,
                          json=configs.model_group("tsqr")).json()["model_group_id"]
    model_id = httpx.post(f"{url}/_plugins/_ml/models/_register", auth=auth,
                          json=configs.model_registration("c", "tsqr", group_id)).json()["model_id"]
    assert node.groups[group_id]["access"] == "private"
    assert predict_as(url, "searcher", model_id) == 403 and predict_as(url, "installer", model_id) == 200


def test_restricted_to_backend_roles(fake):
    """A non-admin may name only roles they hold (ml-commons refuses the group), and the closing
    check runs as the installing user: an admin installs a group for others' roles."""
    node, url = fake(access_control=True)
    with pytest.raises(InputError, match="backend roles specified"):
        install(url, model_access="restricted", backend_roles=("analysts",))
    installed = install(url, user="admin", model_access="restricted", backend_roles=("analysts",))
    assert node.groups[installed["model_group_id"]]["backend_roles"] == ["analysts"]
    assert predict_as(url, "analyst", installed["model_id"]) == 200
    assert predict_as(url, "searcher", installed["model_id"]) == 403
    # another user cannot take the admin's install over, and the refusal names whose it is
    models = dict(node.models)
    with pytest.raises(InputError, match="belongs to admin"):
        install(url, user="installer", model_access="restricted", backend_roles=("analysts",))
    assert node.models == models


def test_the_closing_check_runs_as_the_installing_user(fake):
    """An admin's group for the analysts, an install by someone who may not use its model: the
    check through OpenSearch says so and nothing stays."""
    node, url = fake(access_control=True)
    group = node.create_group({"name": "tsqr", "description": "tsqr: TongSearch-QR query rewriter models "
                               "(tsqr opensearch install)", "access_mode": "restricted",
                               "backend_roles": ["analysts"]}, USERS["admin"])[1]["model_group_id"]
    connectors = dict(node.connectors)
    with pytest.raises(InputError, match="may not use the model"):
        install(url, user="installer", model_access="restricted", backend_roles=("analysts",))
    assert node.connectors == connectors and list(node.groups) == [group]


def test_access_options_are_checked_before_anything_is_made(fake):
    node, url = fake(access_control=True)
    with pytest.raises(InputError, match="backend roles"):
        install(url, model_access="restricted")
    with pytest.raises(InputError, match="backend roles"):
        install(url, model_access="public", backend_roles=("analysts",))
    assert not node.groups and not node.connectors


def test_a_reinstall_with_another_access_updates_the_group(fake):
    node, url = fake(access_control=True)
    installed = install(url, user="admin", model_access="restricted", backend_roles=("analysts",))
    assert predict_as(url, "searcher", installed["model_id"]) == 403
    again = install(url, user="admin")  # public again
    assert again["model_group_id"] == installed["model_group_id"]
    assert node.groups[again["model_group_id"]]["access"] == "public"
    assert predict_as(url, "searcher", again["model_id"]) == 200


def test_with_access_control_off_no_access_field_is_sent(fake):
    node, url = fake(access_control=False)
    installed = install(url)  # the fake refuses access fields here, as ml-commons does
    assert node.groups[installed["model_group_id"]]["access"] == "public"
    assert predict_as(url, "searcher", installed["model_id"]) == 200
    with pytest.raises(InputError, match="access control is off"):
        install(url, model_access="private")


def test_a_security_plugin_that_is_switched_off_controls_nothing(fake):
    """The setting on, the plugin installed but disabled (as the OpenSearch image can run it):
    ml-commons sees no user and refuses access fields, so none is sent (found by review: even
    the default public failed with 400)."""
    node, url = fake(access_control=True, security_active=False)
    installed = install(url)
    assert node.groups[installed["model_group_id"]]["owner"] is None


def test_another_users_tsqr_record_is_not_read(fake):
    """With access control on, a connector belongs to who made it: a tsqr record on another user's
    connector is that user's word, not the cluster's history, and an install or uninstall by
    someone else does not act on it (a second review planted one to steer cluster settings)."""
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller

    node, url = fake(access_control=True)
    install(url, user="searcher")  # a connector owned by searcher, with a tsqr record
    theirs = OpenSearchInstaller(url, auth=("installer", "pw"))
    admin = OpenSearchInstaller(url, auth=("admin", "pw"))
    try:
        assert theirs.tsqr_connectors() == []
        assert [c.record.regex for c in admin.tsqr_connectors()]  # an admin reads every record
    finally:
        theirs.close()
        admin.close()


def test_trusting_the_service_keeps_the_default_endpoints_and_uninstall_gives_the_list_back(fake):
    """Without engines too (a run without make engines): install reads the effective trusted list,
    defaults included (include_defaults), adds the service's endpoint beside them, and the last
    uninstall unsets it again. Dropping include_defaults would replace OpenAI, Bedrock... with ours."""
    from tests.fake_ml_commons import DEFAULT_TRUSTED, TRUSTED
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller

    node, url = fake(access_control=False)
    install(url)
    assert node.persistent[TRUSTED][: len(DEFAULT_TRUSTED)] == DEFAULT_TRUSTED and len(node.persistent[TRUSTED]) == 3
    installer = OpenSearchInstaller(url, auth=("installer", "pw"))
    try:
        installer.uninstall("tsqr", index_template=False)
    finally:
        installer.close()
    assert TRUSTED not in node.persistent
