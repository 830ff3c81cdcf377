"""`tsqr opensearch install|uninstall|render`: errors raised before anything is sent, and the CLI
against a real OpenSearch node (the installer's behaviour on 2.19 and 3.x is in
test_opensearch_pipeline_live.py). The scripted ml-commons server that stood here encoded the
same mistakes as the installer and was removed once real nodes ran in the tests."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import engine_url
from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller
from tsqr_plugins.errors import InputError, ServerUnavailableError
from tsqr_plugins.testing.service import free_port


def test_install_errors_are_clear():
    with pytest.raises(ServerUnavailableError, match="unreachable"):
        OpenSearchInstaller(f"http://127.0.0.1:{free_port()}").install("http://127.0.0.1:8000")
    # a bad service URL is refused before the cluster is asked anything (this port has no server)
    with pytest.raises(InputError, match="http"):
        OpenSearchInstaller(f"http://127.0.0.1:{free_port()}").install("127.0.0.1:8000")


@pytest.mark.integration
@pytest.mark.parametrize("engine", ["opensearch", "opensearch3"])
def test_cli_install_uninstall_and_render(engine, capsys, tmp_path, monkeypatch):
    """The whole install (index template and BRIGHT ingest pipeline included) on both lines: make
    engines lays ingest-common and lang-mustache into 2.19's integ-test zip as the full
    distribution has them."""
    from tsqr_plugins.cli import main

    url = engine_url(engine)
    monkeypatch.setenv("TSQR_API_KEY", "secret-token")
    name = "tsqr-cli-test"
    # Nothing answers at 10.1.2.3: install's closing rewrite through OpenSearch fails, loudly, and
    # leaves the cluster as it was.
    before = cluster_state(url)
    assert main(["opensearch", "install", "--url", url, "--service-url", "http://10.1.2.3:8000", "--name", name]) == 2
    assert "a rewrite through OpenSearch failed" in capsys.readouterr().err
    assert cluster_state(url) == before
    assert main(["opensearch", "install", "--url", url, "--service-url", "http://10.1.2.3:8000", "--name", name,
                 "--no-check"]) == 0
    out = capsys.readouterr().out
    assert f"search_pipeline={name}-rewrite" in out and "model_id: " in out
    settings = httpx.get(f"{url}/_cluster/settings", params={"flat_settings": "true"}).json()["persistent"]
    assert settings["plugins.ml_commons.connector.private_ip_enabled"] == "true"  # 10.x is private
    assert httpx.get(f"{url}/_index_template/{name}").status_code == 200
    # the ingest pipeline runs: BRIGHT's id becomes _id, its content the template's field
    simulated = httpx.post(f"{url}/_ingest/pipeline/{name}-bright/_simulate",
                           json={"docs": [{"_source": {"id": "doc-7", "content": "moths"}}]}).json()
    assert simulated["docs"][0]["doc"]["_id"] == "doc-7", simulated
    assert simulated["docs"][0]["doc"]["_source"]["text"] == "moths"
    assert main(["opensearch", "uninstall", "--url", url, "--name", name]) == 0
    assert httpx.get(f"{url}/_index_template/{name}").status_code == 404
    after = httpx.get(f"{url}/_cluster/settings", params={"flat_settings": "true"}).json()["persistent"]
    assert "plugins.ml_commons.connector.private_ip_enabled" not in after
    assert main(["opensearch", "render", "--output", str(tmp_path)]) == 0
    assert (tmp_path / "opensearch" / "connector.json").is_file()


def cluster_state(url: str) -> dict:
    """What an install may touch: settings, connectors, models, model groups, pipelines, templates."""
    def hits(path):
        answer = httpx.post(f"{url}{path}", json={"query": {"match_all": {}}, "size": 1000})
        return sorted(hit["_id"] for hit in answer.json().get("hits", {}).get("hits", [])) if answer.status_code == 200 else []

    settings = httpx.get(f"{url}/_cluster/settings", params={"flat_settings": "true"}).json()
    return {"settings": settings, "connectors": hits("/_plugins/_ml/connectors/_search"),
            "models": hits("/_plugins/_ml/models/_search"), "groups": hits("/_plugins/_ml/model_groups/_search"),
            "search pipelines": sorted(httpx.get(f"{url}/_search/pipeline").json()),
            "ingest pipelines": sorted(httpx.get(f"{url}/_ingest/pipeline").json()),
            "index templates": sorted(t["name"] for t in httpx.get(f"{url}/_index_template").json()["index_templates"])}


def test_render_needs_an_output_folder(capsys):
    """From a clone, a default of ./integrations would rewrite the tracked files."""
    from tsqr_plugins.cli import main

    with pytest.raises(SystemExit):
        main(["opensearch", "render"])
    assert "--output" in capsys.readouterr().err


@pytest.mark.parametrize("plugins, weights, outcome", [
    ([], None, "not every node has the neural-search plugin"),
    ([("n1", "opensearch-neural-search", "2.18.0.0")], None, "has no score-ranker-processor"),
    ([("n1", "opensearch-neural-search", "2.19.1.0")], None, None),
    ([("n1", "opensearch-neural-search", "2.19.1.0")], [0.5, 0.5], InputError),   # weights: 3.1.0.0+
    ([("n1", "opensearch-neural-search", "3.1.0.0")], [0.5, 0.5], None),
    # every node must have it: a search may be coordinated by any of them
    ([("n1", "opensearch-neural-search", "3.6.0.0"), ("n2", "opensearch-ml", "3.6.0.0")], None, "not every node"),
])
def test_the_rrf_pipeline_goes_where_neural_search_can_run_it(plugins, weights, outcome, monkeypatch):
    """What `_cat/plugins` says decides, before anything changes (the score-ranker-processor and
    its rank_constant: neural-search 2.19.0.0; its weights: 3.1.0.0)."""
    installer = OpenSearchInstaller(f"http://127.0.0.1:{free_port()}")
    rows = [{"name": node, "component": component, "version": version} for node, component, version in plugins]
    monkeypatch.setattr(installer, "_plugins", lambda: rows)
    if outcome is InputError:
        with pytest.raises(InputError, match="3.1"):
            installer.rrf_plan(weights)
    elif outcome is None:
        assert installer.rrf_plan(weights) is None
    else:
        assert outcome in installer.rrf_plan(weights)
