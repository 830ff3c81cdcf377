"""The native OpenSearch stage end to end on real nodes (2.19 and 3.x, with ml-commons):
`tsqr opensearch install` against the node and a real `tsqr serve`, searches through the
pipelines, fail-open with the service stopped, and an uninstall that leaves the cluster as found.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from tests.conftest import engine_url, indexed_corpus
from tsqr_plugins.testing.conformance import CORPUS, LONG_REWRITE, QUERY, RELEVANT, REWRITE

pytestmark = pytest.mark.integration

TRUSTED = "plugins.ml_commons.trusted_connector_endpoints_regex"
# Reaches the service intact only if ml-commons' substitution leaves valid JSON.
HOSTILE = 'moths "quoted", \\back\\slashes, a tab\t, a newline\n and {"json": 1}'


# Queries whose text ml-commons would mangle as a text parameter: a JSON object or array is not
# escaped (StringUtils.isJson). The pipeline sends the match *object*, which ml-commons inserts as
# JSON, so these are rewritten like any text.
JSON_LOOKING = ['{"moths": "street lamps"}', '["moths", "lamps"]']
# ${parameters.*} is substituted inside the query (commons-text StringSubstitutor,
# HttpConnector.createPayload, 2.19.6.0 and 3.6.0.0): ${parameters.match} loops, an unknown name
# stays a placeholder, which fails the call; the search must run unrewritten, answered once. A
# parameter the connector kept (an older tsqr kept `mode`) would be expanded into a body that works
# and the service would rewrite a query the user never wrote: EXPANDED is in the file to catch that.
UNSENDABLE = ["moths ${parameters.match}", "moths ${parameters.tsqr_install}", "moths ${parameters.tsqr_key}",
              "moths ${parameters.mode} street lamps"]
EXPANDED = "moths replace street lamps"
LONG = "moths and a rewrite longer than the clause limit"


def ids(response: dict) -> list[str]:
    assert "hits" in response, response
    return [hit["_id"] for hit in response["hits"]["hits"]]


@pytest.fixture(scope="module", params=["opensearch", "opensearch3"])
def node(request):
    url = engine_url(request.param)
    with indexed_corpus(url, "tsqr-pipeline") as index:
        yield url, index


@pytest.fixture
def service(tmp_path):
    pytest.importorskip("uvicorn")
    from tsqr_plugins.service import ServiceConfig, create_app
    from tsqr_plugins.testing.service import RunningApp

    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(json.dumps({QUERY: REWRITE, HOSTILE: REWRITE, EXPANDED: REWRITE, LONG: LONG_REWRITE,
                                    **{query: REWRITE for query in JSON_LOOKING}}))
    with RunningApp(create_app(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True))) as running:
        yield running


@pytest.fixture
def pipeline(node, service):
    """(url, index, name): a fresh install on the node, uninstalled afterwards."""
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller

    url, index = node
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    installer = OpenSearchInstaller(url)
    try:
        installer.install(service.url, name=name, index_template=False)
        yield url, index, name
    finally:
        installer.uninstall(name, index_template=False)
        installer.close()


def effective_settings(url: str) -> dict:
    answer = httpx.get(f"{url}/_cluster/settings", params={"include_defaults": "true", "flat_settings": "true"}).json()
    return {scope: answer.get(scope, {}) for scope in ("persistent", "transient", "defaults")}


def search(url: str, index: str, body: dict, pipeline: str | None = None) -> dict:
    params = {"search_pipeline": pipeline} if pipeline else None
    return httpx.post(f"{url}/{index}/_search", json=body, params=params, timeout=60).json()


def test_pipeline_search_equals_searching_for_the_rewrite(node, service):
    from tsqr_plugins import engine_configs
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller

    url, index = node
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    before = effective_settings(url)
    installer = OpenSearchInstaller(url)
    try:
        installer.install(service.url, name=name, index_template=False)
        body = {"query": {"match": {"text": {"query": QUERY}}}, "size": 3}
        plain = ids(search(url, index, body))
        rewritten = search(url, index, body, f"{name}-rewrite")
        wanted = search(url, index, {"query": {"match": {"text": {"query": REWRITE}}}, "size": 3})
        assert plain[0] not in RELEVANT
        assert ids(rewritten) == ids(wanted) and set(ids(rewritten)[:2]) == RELEVANT
        hostile = {"query": {"match": {"text": {"query": HOSTILE}}}, "size": 3}
        assert ids(search(url, index, hostile, f"{name}-rewrite")) == ids(wanted)

        # the template variant keeps the original beside the rewrite
        templated = search(url, index, engine_configs.template_search(QUERY), f"{name}-rewrite-template")
        assert set(ids(templated)[:2]) == RELEVANT
    finally:
        installer.uninstall(name, index_template=False)
        installer.close()
    after = effective_settings(url)
    assert after["persistent"] == before["persistent"] and after["transient"] == before["transient"]
    assert httpx.get(f"{url}/_search/pipeline/{name}-rewrite").status_code == 404


def test_reinstall_is_idempotent_replaces_an_outdated_connector_and_handles_dotted_fields(node, service, tmp_path):
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller, read_record
    from tsqr_plugins.errors import InputError

    url, _ = node
    index = f"tsqr-dotted-{uuid.uuid4().hex[:6]}"
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    mapping = {"mappings": {"properties": {"title": {"properties": {"en": {"type": "text"}}}}}}
    assert httpx.put(f"{url}/{index}", json=mapping).status_code == 200
    for doc_id, text in CORPUS.items():
        httpx.put(f"{url}/{index}/_doc/{doc_id}", params={"refresh": "true"}, json={"title": {"en": text}})
    installer = OpenSearchInstaller(url)
    try:
        first = installer.install(service.url, name=name, field="title.en", index_template=False)
        assert installer.install(service.url, name=name, field="title.en", index_template=False) == first
        body = {"query": {"match": {"title.en": {"query": QUERY}}}, "size": 3}
        assert set(ids(search(url, index, body, f"{name}-rewrite"))[:2]) == RELEVANT

        # a connector an older tsqr left (its body, its parameters, its record of the settings) is
        # replaced, not reused, and its record still counts
        connector = httpx.get(f"{url}/_plugins/_ml/connectors/{first['connector_id']}").json()
        assert connector["actions"][0]["request_body"].count("${parameters.match}") == 1
        assert int(connector["client_config"]["read_timeout"]) == 12  # the default 10 s budget, and 2 s
        old_record = read_record(connector, [])[0].before
        legacy = {"name": name, "description": "TongSearch-QR query rewriting through tsqr serve (prompt built server-side)",
                  "version": 1, "protocol": "http", "credential": {"api_key": "unused"},
                  "parameters": {"mode": "replace", "tsqr_restore": json.dumps(old_record)},
                  "actions": [{**connector["actions"][0],
                               "request_body": '{ "queries": ["${parameters.query}"], "mode": "${parameters.mode}" }'}]}
        stale_id = httpx.post(f"{url}/_plugins/_ml/connectors/_create", json=legacy).json()["connector_id"]
        again = installer.install(service.url, name=name, field="title.en", index_template=False)
        assert again["connector_id"] == first["connector_id"]  # the standing one still fits
        assert httpx.get(f"{url}/_plugins/_ml/connectors/{stale_id}").status_code == 404
        assert set(ids(search(url, index, body, f"{name}-rewrite"))[:2]) == RELEVANT

        other = f"{name}-foreign"
        httpx.post(f"{url}/_plugins/_ml/connectors/_create", json={
            "name": other, "protocol": "http", "version": 1, "credential": {"api_key": "x"},
            "actions": [{"action_type": "predict", "method": "POST", "url": "https://api.openai.com/v1/x",
                         "request_body": "{}"}]})
        with pytest.raises(InputError, match="did not create"):
            installer.install(service.url, name=other, index_template=False)
    finally:
        installer.uninstall(name, index_template=False)
        installer.close()
        httpx.delete(f"{url}/{index}")


def test_pipeline_search_falls_back_to_the_original_query_when_the_service_is_down(node, tmp_path):
    """ignore_failure is honoured from ml-commons 2.19.1.0 on; both lines tested here are newer."""
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller
    from tsqr_plugins.service import ServiceConfig, create_app
    from tsqr_plugins.testing.service import RunningApp

    url, index = node
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(json.dumps({QUERY: REWRITE}))
    installer = OpenSearchInstaller(url)
    body = {"query": {"match": {"text": {"query": QUERY}}}, "size": 3}
    try:
        with RunningApp(create_app(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True))) as running:
            installer.install(running.url, name=name, index_template=False)
        # the service is gone now
        answer = search(url, index, body, f"{name}-rewrite")
        assert ids(answer) == ids(search(url, index, body))
        # The template variant is not fail-open: the unresolved placeholder fails the search (seen on
        # 2.19.6 and 3.6.0; the README says so). This notices if a version starts answering.
        from tsqr_plugins import engine_configs

        templated = httpx.post(f"{url}/{index}/_search", params={"search_pipeline": f"{name}-rewrite-template"},
                               json=engine_configs.template_search(QUERY), timeout=60)
        assert templated.status_code == 400 and "Variable not found: tsqr_rewrite" in templated.text
    finally:
        installer.uninstall(name, index_template=False)
        installer.close()


# Every query shape a pipeline set as an index default would meet. ml-commons 2.19.2.0+
# (MLInferenceSearchRequestProcessor.rewriteQueryString) answers a search whose input path is
# missing and, with ignore_missing, goes on to call the model anyway and answers again: the search
# ran twice and some HTTP answers carried a second (500) response spliced in.
NOT_REWRITTEN = {
    "bool": {"bool": {"should": [{"match": {"text": QUERY}}]}},
    "term": {"term": {"id": "d2"}},
    "match_all": {"match_all": {}},
    "multi_match": {"multi_match": {"query": QUERY, "fields": ["text"]}},
    "match on another field": {"match": {"title": QUERY}},
}
REWRITTEN = {
    "match": {"match": {"text": {"query": QUERY}}},
    # the processor reads request.source().toString(), which always writes the long form
    "match, short form": {"match": {"text": QUERY}},
}


def query_total(url: str, index: str) -> int:
    stats = httpx.get(f"{url}/{index}/_stats/search").json()
    return stats["indices"][index]["total"]["search"]["query_total"]


def test_every_query_shape_runs_once_and_answers_one_document(pipeline):
    url, index, name = pipeline
    searches = [(shape, query) for shape, query in {**NOT_REWRITTEN, **REWRITTEN}.items() for _ in range(4)]
    before, expected = query_total(url, index), 0
    for shape, query in searches:
        response = httpx.post(f"{url}/{index}/_search", params={"search_pipeline": f"{name}-rewrite"},
                              json={"query": query, "size": 3}, timeout=60)
        assert response.status_code == 200, (shape, response.text[:300])
        answer = json.loads(response.content)  # raises on a second document spliced in
        plain = search(url, index, {"query": query, "size": 3})
        wanted = plain if shape in NOT_REWRITTEN else search(url, index, {"query": {"match": {"text": REWRITE}}, "size": 3})
        assert ids(answer) == ids(wanted), shape
        expected += 2 if shape in NOT_REWRITTEN else 3  # the pipeline search once, and the plain ones
    for _ in range(20):  # a second run, if any, may land after its answer
        if query_total(url, index) - before > expected:
            break
        time.sleep(0.1)
    assert query_total(url, index) - before == expected


def test_queries_ml_commons_cannot_send_fall_back_cleanly(pipeline):
    url, index, name = pipeline
    wanted = ids(search(url, index, {"query": {"match": {"text": REWRITE}}, "size": 3}))
    for query in JSON_LOOKING:
        assert ids(search(url, index, {"query": {"match": {"text": query}}, "size": 3}, f"{name}-rewrite")) == wanted
    for query in UNSENDABLE:
        body = {"query": {"match": {"text": query}}, "size": 3}
        response = httpx.post(f"{url}/{index}/_search", params={"search_pipeline": f"{name}-rewrite"},
                              json=body, timeout=60)
        assert response.status_code == 200, (query, response.text[:300])
        assert ids(json.loads(response.content)) == ids(search(url, index, body)), query


def test_the_pipeline_searches_what_the_client_stage_searches(pipeline, tmp_path):
    """Options meant for the original words (operator and, minimum_should_match, fuzziness) would
    leave a long rewrite almost no hits: both stages drop them, keep analyzer and boost, and cap the
    rewrite to the clause budget (querydsl.rewritten_match, built in one place)."""
    from opensearchpy import OpenSearch

    from tsqr_plugins.adapters.opensearch import RewritingOpenSearch
    from tsqr_plugins.testing.conformance import file_rewriter

    url, index, name = pipeline
    options = {"operator": "and", "minimum_should_match": "100%", "fuzziness": "AUTO", "boost": 2}
    body = {"query": {"match": {"text": {"query": QUERY, **options}}}, "size": 5}
    through_pipeline = search(url, index, body, f"{name}-rewrite")
    client = RewritingOpenSearch(OpenSearch(url), file_rewriter(tmp_path))
    through_client = client.search(index=index, body=body)
    assert ids(through_pipeline) == ids(through_client) and set(ids(through_pipeline)[:2]) == RELEVANT
    scores = lambda answer: [round(hit["_score"], 4) for hit in answer["hits"]["hits"]]  # noqa: E731
    assert scores(through_pipeline) == scores(through_client)


def test_a_rewrite_longer_than_the_clause_limit_is_capped(pipeline):
    """3,000 distinct terms written into a match would pass the 1,024-clause limit after the
    processor, where nothing falls back (the search failed); the service caps it as the client
    stage does."""
    from tsqr_plugins import querydsl

    url, index, name = pipeline
    answer = httpx.post(f"{url}/{index}/_search", params={"search_pipeline": f"{name}-rewrite"}, timeout=60,
                        json={"query": {"match": {"text": LONG}}, "size": 3})
    assert answer.status_code == 200, answer.text[:300]
    capped = querydsl.rewritten_match({"query": LONG}, LONG_REWRITE)
    assert ids(answer.json()) == ids(search(url, index, {"query": {"match": {"text": capped}}, "size": 3}))


# -- what an adversarial review found in install/uninstall (each failed before its fix) -----------


def test_uninstall_leaves_what_others_made_on_tsqrs_connector_and_stops_nothing_in_use(node, service):
    """A model someone registered on tsqr's connector (in their own group) is not deleted, and a
    model an agent uses is neither deleted nor undeployed (ml-commons' own check with
    safe_delete_model looks at agents too, DeleteModelTransportAction.checkDownstreamTaskBeforeDeleteModel);
    the connector and the settings it needs stay, and uninstall says so."""
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller

    url, _ = node
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    installer = OpenSearchInstaller(url)
    group, theirs, agent = {}, None, {}
    try:
        installed = installer.install(service.url, name=name, index_template=False)
        group = httpx.post(f"{url}/_plugins/_ml/model_groups/_register", json={"name": f"{name}-theirs"}).json()
        theirs = httpx.post(f"{url}/_plugins/_ml/models/_register", json={
            "name": f"{name}-theirs", "function_name": "remote", "connector_id": installed["connector_id"],
            "model_group_id": group["model_group_id"]}).json()["model_id"]
        agent = httpx.post(f"{url}/_plugins/_ml/agents/_register", json={
            "name": f"{name}-agent", "type": "flow",
            "tools": [{"type": "MLModelTool", "parameters": {"model_id": installed["model_id"], "prompt": "x"}}]}).json()
        report = installer.uninstall(name, index_template=False)
        kept = "; ".join(report.kept)
        assert f"model {theirs}" in kept and f"agent {agent['agent_id']}" in kept, kept
        assert httpx.get(f"{url}/_plugins/_ml/models/{theirs}").status_code == 200
        # the agent's model was not stopped (ml-commons' sync-up job may have marked it DEPLOY_FAILED
        # on a node just started; undeploying is what must not happen)
        state = httpx.get(f"{url}/_plugins/_ml/models/{installed['model_id']}").json()["model_state"]
        assert state in ("DEPLOYED", "DEPLOY_FAILED"), state
        assert httpx.get(f"{url}/_plugins/_ml/connectors/{installed['connector_id']}").status_code == 200
        assert configs_regex(service.url) in effective_settings(url)["persistent"][TRUSTED]

        httpx.delete(f"{url}/_plugins/_ml/agents/{agent['agent_id']}")
        httpx.delete(f"{url}/_plugins/_ml/models/{theirs}")
        assert not installer.uninstall(name, index_template=False).kept
    finally:  # what the test made as someone else goes, then the install
        if agent:
            httpx.delete(f"{url}/_plugins/_ml/agents/{agent['agent_id']}")
        if theirs:
            httpx.delete(f"{url}/_plugins/_ml/models/{theirs}")
        installer.uninstall(name, index_template=False)
        if group:
            httpx.delete(f"{url}/_plugins/_ml/model_groups/{group['model_group_id']}")
        installer.close()


def configs_regex(service_url: str) -> str:
    from tsqr_plugins import engine_configs

    return engine_configs.trusted_endpoint_regex(service_url)


def test_an_install_that_fails_halfway_changes_nothing(node, service):
    """With remote inference switched off ml-commons refuses the connector: the settings install
    had just changed and the group it had just made are taken back (before: left for good, and
    counted as the administrator's by the next install)."""
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller
    from tsqr_plugins.errors import InputError
    from tests.test_opensearch_install import cluster_state

    url, _ = node
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    switch = "plugins.ml_commons.remote_inference.enabled"
    httpx.put(f"{url}/_cluster/settings", json={"persistent": {switch: False}}).raise_for_status()
    installer = OpenSearchInstaller(url)
    try:
        before = cluster_state(url)
        with pytest.raises(InputError):
            installer.install(service.url, name=name, index_template=False)
        assert cluster_state(url) == before
    finally:
        httpx.put(f"{url}/_cluster/settings", json={"persistent": {switch: None}})
        installer.uninstall(name, index_template=False)
        installer.close()


def test_damaged_or_planted_records_are_left_alone_and_stop_nothing(node, service):
    """A connector carrying a record that does not read, or an older tsqr's record on a connector to
    something that is not a tsqr serve, is ignored with a warning: installs and uninstalls of other
    names go on (before: an AttributeError stopped every one), and the planted record is never
    taken for the cluster's history."""
    from tsqr_plugins.adapters.opensearch_install import RECORD_MARKER, OpenSearchInstaller

    url, _ = node
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    action = {"action_type": "predict", "method": "POST", "url": f"{service.url}/v1/rewrite",
              "request_body": '{"match": ${parameters.match}}'}
    planted = [
        {"name": f"{name}-damaged", "description": "x" + RECORD_MARKER + "bm90IGpzb24", "actions": [action]},
        {"name": f"{name}-legacy", "description": "x", "parameters": {"tsqr_restore": "[]"}, "actions": [action]},
        {"name": f"{name}-elsewhere", "description": "x", "parameters": {"tsqr_restore": json.dumps(
            {TRUSTED: {"persistent": None, "transient": None, "effective": ["^.*$"]}})},
         "actions": [{**action, "url": "https://api.openai.com/v1/chat/completions"}]},
    ]
    installer = OpenSearchInstaller(url)
    installer.install(service.url, name=name, index_template=False)  # trusts the service's URL for the planting
    ids_planted = [httpx.post(f"{url}/_plugins/_ml/connectors/_create", json={
        "version": 1, "protocol": "http", "credential": {"api_key": "x"}, **c}).json()["connector_id"] for c in planted]
    try:
        assert {c.id for c in installer.tsqr_connectors()}.isdisjoint(ids_planted)
        installer.install(service.url, name=f"{name}-2", index_template=False)
        assert not installer.uninstall(f"{name}-2", index_template=False).kept
        assert not installer.uninstall(name, index_template=False).kept
        for connector_id in ids_planted:
            assert httpx.get(f"{url}/_plugins/_ml/connectors/{connector_id}").status_code == 200
    finally:
        installer.uninstall(f"{name}-2", index_template=False)
        installer.uninstall(name, index_template=False)
        installer.close()
        for connector_id in ids_planted:
            httpx.delete(f"{url}/_plugins/_ml/connectors/{connector_id}")


def test_a_record_claiming_another_endpoint_cannot_make_uninstall_drop_it(node, service):
    """A second review: anyone who may create a connector could plant a tsqr record whose regex is
    the administrator's (here OpenAI's, trusted by default) and have uninstall remove it. What an
    install needs now follows from the connector's own URL, whatever its record claims."""
    import base64

    from tsqr_plugins.adapters.opensearch_install import RECORD_MARKER, OpenSearchInstaller

    url, _ = node
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    installer = OpenSearchInstaller(url)
    installer.install(service.url, name=name, index_template=False)  # trusts the service's URL
    openai = "^https://api\\.openai\\.com/.*$"
    before = effective_settings(url)
    trusted = before["persistent"][TRUSTED]
    assert openai in trusted
    claim = {"format": 2, "key": "", "trust": {"regex": openai, "private": False, "regex_preexisting": False,
             "before": {TRUSTED: {"persistent": None, "transient": None, "effective": trusted},
                        "plugins.ml_commons.connector.private_ip_enabled":
                            {"persistent": None, "transient": None, "effective": "false"}}}}
    encoded = base64.urlsafe_b64encode(json.dumps(claim).encode()).decode().rstrip("=")
    planted = httpx.post(f"{url}/_plugins/_ml/connectors/_create", json={
        "name": f"{name}-planted", "description": "x" + RECORD_MARKER + encoded, "version": 1, "protocol": "http",
        "credential": {"api_key": "x"}, "actions": [{"action_type": "predict", "method": "POST",
                                                     "url": f"{service.url}/v1/rewrite",
                                                     "request_body": '{"match": ${parameters.match}}'}]}).json()
    try:
        installer.uninstall(f"{name}-planted", index_template=False)
        assert openai in effective_settings(url)["persistent"][TRUSTED]
    finally:
        httpx.delete(f"{url}/_plugins/_ml/connectors/{planted.get('connector_id')}")
        installer.uninstall(name, index_template=False)
        installer.close()


def test_installs_at_once_wait_for_each_other_and_a_dead_runs_lock_is_taken_over(node, tmp_path):
    """Two installs at once (two names, two services) each read, change and write the same trusted
    list: they take turns on a lock, so both endpoints stay trusted; a lock a dead run left is
    taken over once stale."""
    import threading

    from tsqr_plugins.adapters.opensearch_install import LOCK_INDEX, LOCK_STALE_S, OpenSearchInstaller
    from tsqr_plugins.service import ServiceConfig, create_app
    from tsqr_plugins.testing.service import RunningApp

    url, _ = node
    names = [f"tsqr-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(json.dumps({QUERY: REWRITE}))
    apps = [RunningApp(create_app(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True))) for _ in names]
    stale = {"mappings": {"_meta": {"tsqr_lock": time.time() - LOCK_STALE_S - 5, "holder": "a run that died"}}}
    assert httpx.put(f"{url}/{LOCK_INDEX}", json=stale).status_code == 200
    errors = []
    try:
        for app in apps:
            app.__enter__()

        def install(name, app):
            installer = OpenSearchInstaller(url)
            try:
                installer.install(app.url, name=name, index_template=False)
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)
            finally:
                installer.close()

        threads = [threading.Thread(target=install, args=(n, a)) for n, a in zip(names, apps)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert not errors, errors
        trusted = effective_settings(url)["persistent"][TRUSTED]
        assert all(configs_regex(app.url) in trusted for app in apps)
        assert httpx.head(f"{url}/{LOCK_INDEX}").status_code == 404
    finally:
        installer = OpenSearchInstaller(url)
        for name in names:
            installer.uninstall(name, index_template=False)
        installer.close()
        for app in apps:
            app.__exit__(None, None, None)
        httpx.delete(f"{url}/{LOCK_INDEX}")
