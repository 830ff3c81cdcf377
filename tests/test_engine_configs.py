"""The JSON documents for Elasticsearch/OpenSearch: schema-level checks against the documented APIs,
the files in integrations/ equal to what the code builds, and a contract test of the OpenSearch
connector against a real `tsqr serve`."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest

from tests.conftest import REPO
from tsqr_plugins import engine_configs as configs
from tsqr_plugins.errors import InputError

BUILTIN_FILTERS = {"lowercase", "porter_stem"}


def test_integrations_folder_matches_the_code(tmp_path):
    """integrations/ is rendered from engine_configs (`tsqr opensearch render`); they never drift."""
    for relative, document in configs.rendered_documents().items():
        path = REPO / "integrations" / relative
        assert path.is_file(), f"{relative} is missing: run `tsqr opensearch render --output integrations`"
        assert path.read_text(encoding="utf-8") == configs.as_file_text(document), f"{relative} is stale"


def test_index_template_schema():
    template = configs.index_template("tsqr", "body")
    assert set(template) >= {"index_patterns", "template", "priority"}
    settings = template["template"]["settings"]
    assert settings["index"]["similarity"]["default"] == {"type": "BM25", "k1": 0.9, "b": 0.4}
    assert settings["number_of_shards"] == 1  # _termvectors statistics must be the whole index's
    analysis = settings["analysis"]
    analyzer = analysis["analyzer"][configs.ANALYZER]
    assert analyzer["tokenizer"] == "standard"
    for name in analyzer["filter"]:  # every filter is built in or defined here
        assert name in BUILTIN_FILTERS or name in analysis["filter"]
    # Lucene's EnglishAnalyzer order: possessive, lowercase, stop, Porter.
    assert [analysis["filter"].get(n, {}).get("type", n) for n in analyzer["filter"]] == \
        ["stemmer", "lowercase", "stop", "porter_stem"]
    assert template["template"]["mappings"]["properties"]["body"] == {"type": "text", "analyzer": configs.ANALYZER}


def test_ingest_pipeline_schema():
    pipeline = configs.ingest_pipeline("body")
    kinds = [next(iter(p)) for p in pipeline["processors"]]
    assert kinds == ["set", "rename"]
    assert pipeline["processors"][0]["set"]["value"] == "{{{id}}}"
    assert pipeline["processors"][1]["rename"] == {"field": "content", "target_field": "body", "ignore_missing": True}


def render_connector_request(connector: dict, parameters: dict) -> tuple[str, str]:
    """What ml-commons sends, as its source reads (2.19.6.0/3.6.0.0, ConnectorUtils
    .escapeRemoteInferenceInputData, StringUtils.isJson, HttpConnector.createPayload): a parameter
    value that is a JSON object or array goes in as it is, any other is JSON-escaped but not
    quoted; then ``${parameters.x}`` is substituted by commons-text StringSubstitutor. The
    pipeline's processor writes an object input with Gson (StringUtils.toJson). The real nodes check
    the same in test_opensearch_pipeline_live."""
    (action,) = connector["actions"]
    merged = {**connector.get("parameters", {}), **parameters}

    def escaped(value):
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        try:
            if isinstance(json.loads(text), (dict, list)):
                return text
        except ValueError:
            pass
        return json.dumps(text)[1:-1]

    body = re.sub(r"\$\{parameters\.(\w+)\}", lambda m: escaped(merged[m.group(1)]), action["request_body"])
    return action["url"], body


def read_json_path(document, path: str):
    """A JSONPath subset: $.key[0].key ..."""
    value = document
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", path.removeprefix("$")):
        value = value[key] if key else value[int(index)]
    return value


def test_connector_and_pipeline_schema():
    connector = configs.connector("http://10.0.0.5:8000/v1", api_key="secret")
    assert set(connector) >= {"name", "description", "version", "protocol", "parameters", "actions", "credential"}
    (action,) = connector["actions"]
    assert action["action_type"] == "predict" and action["method"] == "POST"
    assert action["url"] == "http://10.0.0.5:8000/v1/rewrite"
    assert action["headers"]["Authorization"] == "Bearer ${credential.api_key}"
    assert "Instructions" not in action["request_body"]  # no prompt text: the service builds it
    # ml-commons reads both timeouts in seconds (HttpJsonConnectorExecutor); before 3.6.0.0 its
    # defaults were 30,000 s, and it never retries a plain error: sized to the rewrite budget
    budget = json.loads(action["request_body"].replace("${parameters.match}", "{}"))["timeout"]
    assert connector["client_config"] == {"connection_timeout": 5, "read_timeout": budget + 2,
                                          "max_connection": 30, "max_retry_times": 0}

    pipeline = configs.rewrite_pipeline("model-1", "body")
    (processor,) = pipeline["request_processors"]
    inference = processor["ml_inference"]
    # ml-commons 2.19.2.0+ answers twice with ignore_missing (see test_missing_path_flags_per_version)
    assert inference["ignore_failure"] is True and inference["ignore_missing"] is False
    assert len(inference["input_map"]) == len(inference["output_map"]) == 1
    (model_input, query_path), = inference["input_map"][0].items()
    (out_path, model_path), = inference["output_map"][0].items()
    # the match object goes out unquoted (an object is inserted as JSON) and comes back in place
    assert model_input == "match" and '"match": ${parameters.match},' in action["request_body"]
    assert query_path == out_path == "query.match.body"
    assert inference["full_response_path"] is True and model_path == configs.MATCH_PATH
    assert "mode" not in connector["parameters"]  # a query's ${parameters.mode} must find nothing to expand

    template = configs.template_pipeline("model-1")["request_processors"][0]["ml_inference"]
    (variable, _), = template["output_map"][0].items()
    search = configs.template_search("q", "body")
    assert f'"${{{variable}}}"' in json.dumps(search)  # the placeholder the processor fills
    assert template["input_map"][0]["match"] == "ext.ml_inference" and search["ext"]["ml_inference"]["query"] == "q"


@pytest.mark.parametrize("ml_commons, ignore_missing", [
    # MLInferenceSearchRequestProcessor.rewriteQueryString: until 2.19.1.0 the missing path throws and
    # its catch answers once through ignore_missing; from 2.19.2.0 (through 3.8.0.0) ignore_missing
    # answers and goes on to a second answer, so only ignore_failure's catch answers once.
    ((2, 16, 0, 0), True), ((2, 19, 1, 0), True), ((2, 19, 2, 0), False), ((2, 19, 6, 0), False),
    ((3, 6, 0, 0), False), (None, False),
])
def test_missing_path_flags_per_version(ml_commons, ignore_missing):
    for pipeline in (configs.rewrite_pipeline("m", ml_commons=ml_commons), configs.template_pipeline("m", ml_commons)):
        inference = pipeline["request_processors"][0]["ml_inference"]
        assert (inference["ignore_missing"], inference["ignore_failure"]) == (ignore_missing, True)


def test_cluster_settings_keep_existing_trust_and_enable_private_ips():
    settings = configs.cluster_settings("http://127.0.0.1:8000", ["^https://api\\.openai\\.com/.*$"])
    persistent = settings["persistent"]
    regexes = persistent["plugins.ml_commons.trusted_connector_endpoints_regex"]
    assert regexes[0] == "^https://api\\.openai\\.com/.*$"
    assert re.match(regexes[1], "http://127.0.0.1:8000/v1/rewrite")
    assert not re.match(regexes[1], "http://127.0.0.1:8000/v1/rewrite/../admin")
    assert persistent["plugins.ml_commons.connector.private_ip_enabled"] is True
    public = configs.cluster_settings("https://rewriter.example.com")["persistent"]
    assert "plugins.ml_commons.connector.private_ip_enabled" not in public


def test_bad_names_and_urls_are_refused():
    with pytest.raises(InputError, match="name"):
        configs.connector("http://127.0.0.1:8000", name='tsqr"}, {"x')
    with pytest.raises(InputError, match="field name"):
        configs.rewrite_pipeline("m", field="text.query}${x")
    with pytest.raises(InputError, match="http"):
        configs.connector("127.0.0.1:8000")


def test_elasticsearch_inference_endpoint():
    endpoint = configs.elasticsearch_inference_endpoint("http://127.0.0.1:8000/v1")
    assert endpoint["service"] == "openai"
    assert endpoint["service_settings"]["url"] == "http://127.0.0.1:8000/v1/chat/completions"


# The match object as OpenSearch writes a match query out (SearchSourceBuilder.toString, the long
# form with every option), with options the user set for the original words.
OPENSEARCH_MATCH = {"operator": "AND", "prefix_length": 0, "max_expansions": 50, "fuzzy_transpositions": True,
                    "lenient": False, "zero_terms_query": "NONE", "auto_generate_synonyms_phrase_query": True,
                    "minimum_should_match": "100%", "fuzziness": "AUTO", "analyzer": "english", "boost": 2.0}


@pytest.mark.parametrize("query", [
    "Why do moths circle street lamps?",
    'A "quoted" query with \\backslashes\\, a tab\t, a newline\n and {"json": 1}',
    '{"moths": "street lamps"}',
])
def test_connector_contract_with_a_real_service(query, tmp_path):
    """Render the connector request as ml-commons' substitution would, send it to a real
    `tsqr serve`, and write the answer where the pipeline's output_map puts it."""
    pytest.importorskip("uvicorn", reason="tsqr serve needs the 'serve' extra")
    from tsqr_plugins import querydsl
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(json.dumps({query: "insects, light, transverse orientation"}))
    with RunningService(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True)) as service:
        connector = configs.connector(service.url)
        original = {"query": query, **OPENSEARCH_MATCH}
        url, body = render_connector_request(connector, {"match": original})
        assert json.loads(body)["match"] == original  # valid JSON, the query intact
        answer = httpx.post(url, content=body, headers=connector["actions"][0]["headers"], timeout=30)
        assert answer.status_code == 200
        model_output = {"inference_results": [{"output": [{"name": "response", "dataAsMap": answer.json()}],
                                               "status_code": 200}]}
        match = read_json_path(model_output, configs.MATCH_PATH)
        # what the client stage builds for the same rewrite: the options of the original words dropped
        assert match == {"query": "insects, light, transverse orientation", "analyzer": "english", "boost": 2.0}
        assert match == querydsl.rewritten_match(original, "insects, light, transverse orientation")

        # An unknown query: the service answers the caller's own object, so the search runs as sent.
        other = {"query": "not in the file", **OPENSEARCH_MATCH}
        _, body = render_connector_request(connector, {"match": other})
        fallback = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=30).json()
        assert fallback["match"] == other and fallback["rewrites"][0]["fallback"]


def test_a_service_host_name_is_private_when_it_resolves_to_a_private_address():
    """ml-commons resolves the connector's host when it calls, and refuses private addresses
    unless private_ip_enabled: a name that resolves to loopback needs it as an IP would."""
    assert configs.is_private_host("http://localhost:8000")
    assert configs.is_private_host(f"http://{socket.gethostname()}:8000")  # this machine's own name
    assert configs.is_private_host("http://10.1.2.3:8000") and configs.is_private_host("http://[::1]:8000")
    assert not configs.is_private_host("http://8.8.8.8:8000")
    assert not configs.is_private_host("http://no-such-host.invalid:8000")  # unresolvable here: public


def test_install_warns_when_ml_commons_ignores_ignore_failure(caplog):
    """Before ml-commons 2.19.1.0 a failing service fails pipeline searches; install says so."""
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller

    installer = OpenSearchInstaller("http://127.0.0.1:1")
    for ml, warned in (((2, 16, 0, 0), True), ((2, 19, 0, 0), True), ((2, 19, 1, 0), False), ((3, 6, 0, 0), False)):
        caplog.clear()
        installer.versions = lambda ml=ml: ((ml[0], ml[1], ml[2]), ml)
        installer.warn_if_not_fail_open()
        assert ("ignore_failure" in caplog.text) == warned, ml
    installer.versions = lambda: ((2, 19, 0), None)
    with pytest.raises(InputError, match="no ml-commons"):
        installer.warn_if_not_fail_open()
    installer.close()


def test_rrf_pipeline_schema():
    """neural-search's score-ranker-processor (RRFProcessorFactory, 3.6.0.0): combination.technique
    rrf, rank_constant 1 to 10,000, parameters.weights each in [0, 1] summing to 1 (3.1.0.0+)."""
    pipeline = configs.rrf_pipeline("model-1", "title.en")
    caller_hybrid, inference = (processor["ml_inference"] for processor in pipeline["request_processors"])
    # a hybrid the caller wrote: its second sub-query rewritten in place, as by rewrite_pipeline
    second = "query.hybrid.queries[1].match['title.en']"
    assert caller_hybrid["input_map"] == [{"match": second}] and caller_hybrid["output_map"] == [{second: configs.MATCH_PATH}]
    # the whole match goes out (the field's name with it); the field's own path keeps to the field
    assert inference["input_map"] == [{"match": "query.match", "tsqr_field": "query.match['title.en']"}]
    assert inference["output_map"] == [{"query": configs.HYBRID_PATH}] and inference["tag"].startswith("tsqr_rewrite")
    assert (inference["ignore_missing"], inference["ignore_failure"]) == (False, True)
    (ranker,) = pipeline["phase_results_processors"]
    assert ranker == {"score-ranker-processor": {"tag": "tsqr_rrf", "combination": {"technique": "rrf", "rank_constant": 60}}}
    weighted = configs.rrf_pipeline("m", rank_constant=10, weights=(3, 1))
    combination = weighted["phase_results_processors"][0]["score-ranker-processor"]["combination"]
    assert combination == {"technique": "rrf", "rank_constant": 10, "parameters": {"weights": [0.75, 0.25]}}
    assert configs.rrf_weights([1, 2]) == [0.333333, 0.666667] and configs.rrf_weights(None) is None
    for bad in ({"rank_constant": 0}, {"rank_constant": 10_001}, {"rank_constant": 2.5}, {"rank_constant": True},
                {"weights": (0, 0)}, {"weights": (-1, 2)}, {"weights": (1, 2, 3)}, {"weights": (float("inf"), 1)}):
        with pytest.raises(InputError):
            configs.rrf_pipeline("m", **bad)
    # the connector's mode is the one each pipeline's service answer is made with
    for mode in configs.MATCH_MODES:
        body = configs.connector("http://10.0.0.5:8000", mode=mode)["actions"][0]["request_body"]
        assert json.loads(body.replace("${parameters.match}", "{}"))["mode"] == mode
    with pytest.raises(InputError, match="mode"):
        configs.connector("http://10.0.0.5:8000", mode="both")
