"""The shared rewrite service over real HTTP (uvicorn on a free loopback port).

Engines that fail or stall on purpose are small Backend subclasses: the thing under test is the
service's handling of them.
"""

import asyncio
import json
import threading
import time

import httpx
import pytest

from tsqr_plugins import Rewriter
from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.backends.openai import OpenAIBackend
from tsqr_plugins.service import ServiceConfig
from tsqr_plugins.testing.service import RunningService
from tests.conftest import SAMPLE

pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra")

SAMPLE_REWRITES = json.loads((SAMPLE / "rewrites.json").read_text())
SAMPLE_QUERIES = list(SAMPLE_REWRITES)


class CountingEngine(Backend):
    """Answers 'rw: <query>' after ``delay`` seconds, recording every batch it is given."""

    NAME = "counting"
    model_id = "counting"

    def __init__(self, delay=0.0, fail=False, hold=None):
        self.delay, self.fail, self.hold = delay, fail, hold
        self.batches = []
        self.answered = 0
        self._lock = threading.Lock()

    def generate(self, queries, prompt, params):
        with self._lock:
            self.batches.append(list(queries))
        time.sleep(self.delay)
        if self.hold is not None:  # answers only once released (30 s at most)
            self.hold.wait(30)
        with self._lock:
            self.answered += 1
        if self.fail:
            raise RuntimeError("engine exploded")
        return [Completion(text=f"rw: {q}") for q in queries]


def file_config(**overrides):
    return ServiceConfig(rewriter="file", rewrites=str(SAMPLE / "rewrites.json"), **overrides)


def engine_config(tmp_path, **overrides):
    return ServiceConfig(rewriter="file", rewrites=str(SAMPLE / "rewrites.json"), cache=str(tmp_path / "c.sqlite"), **overrides)


def post(url, body, **kwargs):
    return httpx.post(url + "/v1/rewrite", json=body, timeout=30, **kwargs)


def metric(text, name):
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_file_engine_rewrites_health_models_and_metrics():
    with RunningService(file_config()) as running:
        answer = post(running.url, {"queries": SAMPLE_QUERIES[:2]}).json()
        assert [r["text"] for r in answer["rewrites"]] == [SAMPLE_REWRITES[q] for q in SAMPLE_QUERIES[:2]]
        assert [r["original"] for r in answer["rewrites"]] == SAMPLE_QUERIES[:2]
        assert answer["prompt_id"] == "tsqr-v1" and not answer["rewrites"][0]["fallback"]
        concat = post(running.url, {"queries": SAMPLE_QUERIES[:1], "mode": "concat", "repeat": 2}).json()
        assert concat["rewrites"][0]["text"] == f"{SAMPLE_QUERIES[0]} {SAMPLE_QUERIES[0]} {SAMPLE_REWRITES[SAMPLE_QUERIES[0]]}"
        assert httpx.get(running.url + "/health").json()["status"] == "ok"
        assert httpx.get(running.url + "/v1/models").json()["data"][0]["id"]
        metrics = httpx.get(running.url + "/metrics").text
        assert 'tsqr_requests_total{endpoint="rewrite",status="200"} 2' in metrics
        assert "tsqr_request_seconds_bucket" in metrics and "tsqr_queue_depth" in metrics


def test_unknown_query_in_file_engine_falls_back():
    with RunningService(file_config()) as running:
        rewrite = post(running.url, {"queries": ["never published"]}).json()["rewrites"][0]
    assert rewrite["fallback"] and rewrite["text"] == "never published"


def test_concurrent_requests_are_batched(tmp_path):
    engine = CountingEngine(delay=0.05)
    with RunningService(engine_config(tmp_path, max_wait_ms=50), engine) as running:
        async def burst():
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*(client.post(running.url + "/v1/rewrite", json={"queries": [f"q{i}"]})
                                              for i in range(16)))
        responses = asyncio.run(burst())
        metrics = httpx.get(running.url + "/metrics").text
    assert all(r.json()["rewrites"][0]["text"] == f"rw: q{i}" for i, r in enumerate(responses))
    assert max(len(batch) for batch in engine.batches) > 1
    assert metric(metrics, "tsqr_batch_size_sum") / metric(metrics, "tsqr_batch_size_count") > 1


def test_identical_in_flight_queries_are_coalesced_and_then_cached(tmp_path):
    engine = CountingEngine(delay=0.3)
    with RunningService(engine_config(tmp_path, max_wait_ms=1), engine) as running:
        async def burst():
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*(client.post(running.url + "/v1/rewrite", json={"queries": ["same"]})
                                              for _ in range(10)))
        responses = asyncio.run(burst())
        again = post(running.url, {"queries": ["same"]}).json()["rewrites"][0]
        metrics = httpx.get(running.url + "/metrics").text
    assert all(r.json()["rewrites"][0]["text"] == "rw: same" for r in responses)
    assert sum(batch.count("same") for batch in engine.batches) == 1
    assert metric(metrics, "tsqr_coalesced_total") + metric(metrics, "tsqr_cache_hits_total") >= 9
    assert again["cached"] and again["text"] == "rw: same"


def test_engine_failure_falls_back_and_strict_gets_502(tmp_path):
    with RunningService(engine_config(tmp_path), CountingEngine(fail=True)) as running:
        rewrite = post(running.url, {"queries": ["q"]}).json()["rewrites"][0]
        strict = post(running.url, {"queries": ["q"], "strict": True})
        metrics = httpx.get(running.url + "/metrics").text
    assert rewrite["fallback"] and rewrite["text"] == "q" and "engine exploded" in rewrite["reason"]
    assert strict.status_code == 502 and "engine exploded" in strict.json()["error"]["message"]
    assert metric(metrics, "tsqr_fallbacks_total") >= 1
    assert metric(metrics, "tsqr_strict_failures_total") == 1  # the strict failure is counted too


def test_time_budget_falls_back_and_the_late_answer_is_cached(tmp_path):
    hold = threading.Event()
    engine = CountingEngine(hold=hold)
    with RunningService(engine_config(tmp_path, timeout=0.2), engine) as running:
        rewrite = post(running.url, {"queries": ["slow"]}).json()["rewrites"][0]
        assert rewrite["fallback"] and "time budget" in rewrite["reason"]
        assert engine.answered == 0  # the fallback came while the engine still held its answer
        hold.set()
        deadline = time.monotonic() + 30
        while engine.answered == 0 and time.monotonic() < deadline:  # the late answer arrives...
            time.sleep(0.05)
        for _ in range(100):  # ...and is stored (the batcher writes it after the engine returns)
            later = post(running.url, {"queries": ["slow"]}).json()["rewrites"][0]
            if later["cached"]:
                break
            time.sleep(0.05)
        assert later["cached"] and later["text"] == "rw: slow"
        hold.clear()
        assert post(running.url, {"queries": ["slower"], "strict": True}).status_code == 504
        hold.set()


def test_a_callers_timeout_shortens_the_budget_never_lengthens_it(tmp_path):
    """An OpenSearch connector sends 'timeout' (its own wait): the fallback comes within it."""
    hold = threading.Event()
    engine = CountingEngine(hold=hold)
    with RunningService(engine_config(tmp_path, timeout=2.0), engine) as running:
        try:
            started = time.monotonic()
            rewrite = post(running.url, {"queries": ["slow"], "timeout": 0.3}).json()["rewrites"][0]
            assert rewrite["fallback"] and "0.3 s" in rewrite["reason"] and time.monotonic() - started < 1.5
            # a longer wish is held to the service's own budget
            rewrite = post(running.url, {"queries": ["slower"], "timeout": 3600}).json()["rewrites"][0]
            assert rewrite["fallback"] and "of 2 s" in rewrite["reason"]
            for bad in (0, -1, "3", True, None):
                response = post(running.url, {"queries": ["x"], "timeout": bad})
                assert response.status_code == 400 and "'timeout'" in response.json()["error"]["message"], bad
        finally:
            hold.set()


@pytest.mark.parametrize("body", [
    {"match": {"query": "moths", "boost": 1e400}},       # echoed back on a fallback: not JSON then
    {"match": {"query": "moths", "fuzziness": -1e400}},
    {"queries": ["moths"], "timeout": 1e400},
    {"queries": ["moths"], "params": {"temperature": 1e400}},
])
def test_numbers_past_the_largest_json_number_are_400_not_500(body):
    """Found by an adversarial review: `{"match": {"boost": 1e400}}` parsed to inf and the answer
    could not be written (500)."""
    with RunningService(file_config()) as running:
        response = httpx.post(running.url + "/v1/rewrite", content=json.dumps(body).replace("Infinity", "1e400"),
                              headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "largest JSON number" in response.json()["error"]["message"]


def test_overload_answers_429_with_retry_after(tmp_path):
    engine = CountingEngine(delay=0.5)
    config = engine_config(tmp_path, max_queue=2, max_batch_size=1, max_wait_ms=0)
    with RunningService(config, engine) as running:
        async def burst():
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*(client.post(running.url + "/v1/rewrite", json={"queries": [f"q{i}"]})
                                              for i in range(12)))
        responses = asyncio.run(burst())
    refused = [r for r in responses if r.status_code == 429]
    assert refused and refused[0].headers["Retry-After"] == "1"
    assert all(r.status_code in (200, 429) for r in responses)


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "malformed JSON"),
    (b'["a"]', 400, "JSON object"),
    (b'{"queries": "a"}', 400, "non-empty list"),
    (b'{"queries": []}', 400, "non-empty list"),
    (b'{"queries": ["ok", "  "]}', 422, "query 1"),
    (b'{"queries": ["a"], "mode": "sum"}', 400, "unknown mode"),
    (b'{"queries": ["a"], "params": {"temperature": -1}}', 400, "temperature"),
    (b'{"queries": ["a"], "params": {"nucleus": 1}}', 400, "unknown generation parameters"),
    (json.dumps({"queries": ["x"] * 300}).encode(), 413, "limit is 256"),
    (json.dumps({"queries": ["x" * 40_000]}).encode(), 413, "characters"),
])
def test_bad_requests_get_clear_4xx(body, status, message):
    with RunningService(file_config()) as running:
        response = httpx.post(running.url + "/v1/rewrite", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status and message in response.json()["error"]["message"]


def test_oversized_body_is_refused():
    with RunningService(file_config(max_body_bytes=1000)) as running:
        response = post(running.url, {"queries": ["x" * 2000]})
    assert response.status_code == 413


def test_bearer_token_guards_everything_but_health():
    with RunningService(file_config(api_key="s3cret")) as running:
        assert post(running.url, {"queries": ["q"]}).status_code == 401
        assert post(running.url, {"queries": ["q"]}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(running.url + "/metrics").status_code == 401
        assert httpx.get(running.url + "/health").status_code == 200
        # Only the exact key opens: another key, the key with a character more or less, the key
        # without its scheme and an empty token are refused on every guarded endpoint.
        for wrong in ("Bearer wrong", "Bearer s3cret2", "Bearer s3cre", "Bearer", "s3cret", "Basic s3cret"):
            headers = {"Authorization": wrong}
            answer = post(running.url, {"queries": ["q"]}, headers=headers)
            assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer", wrong
            assert httpx.get(running.url + "/v1/models", headers=headers).status_code == 401, wrong
            assert httpx.get(running.url + "/metrics", headers=headers).status_code == 401, wrong
            assert httpx.post(running.url + "/v1/chat/completions", headers=headers, timeout=30, json={
                "model": "tsqr-rewrite", "messages": [{"role": "user", "content": "q"}]}).status_code == 401, wrong


def test_openai_backend_against_the_service_replays_through_chat_completions():
    with RunningService(file_config()) as running:
        backend = OpenAIBackend(running.url + "/v1")
        results = Rewriter(backend).rewrite_batch(SAMPLE_QUERIES)
    assert [r.text for r in results] == [SAMPLE_REWRITES[q] for q in SAMPLE_QUERIES]
    assert not any(r.fallback for r in results)


def test_chat_completions_on_the_tiny_model(tiny_model, tmp_path):
    config = ServiceConfig(rewriter="transformers", model=str(tiny_model), device="cpu", cache=str(tmp_path / "c.sqlite"))
    with RunningService(config) as running:
        body = {"model": str(tiny_model), "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8,
                "temperature": 0}
        answer = httpx.post(running.url + "/v1/chat/completions", json=body, timeout=60).json()
        assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"]
        # the random tiny model never reaches its end token in 8: cut at max_tokens, as OpenAI says it
        assert answer["choices"][0]["finish_reason"] == "length"
        rewrite = post(running.url, {"queries": ["why do moths fly to light"], "params": {"max_tokens": 8}}).json()
        assert not rewrite["rewrites"][0]["fallback"]
        stream = httpx.post(running.url + "/v1/chat/completions", json={**body, "stream": True})
        assert stream.status_code == 400


@pytest.mark.slow
def test_load_64_clients_every_response_matches_its_query(tmp_path):
    """64 concurrent clients send 1,000 requests each; every answer must be its own query's."""
    rewrites = {f"client {c} query {i}": f"rewrite {c}/{i}" for c in range(64) for i in range(25)}
    path = tmp_path / "rewrites.json"
    path.write_text(json.dumps(rewrites))
    config = ServiceConfig(rewriter="file", rewrites=str(path), max_queue=100_000)
    per_client = 1000

    with RunningService(config) as running:
        async def client(number, http):
            mismatches = 0
            for i in range(per_client):
                query = f"client {number} query {i % 25}"
                response = await http.post(running.url + "/v1/rewrite", json={"queries": [query]})
                rewrite = response.json()["rewrites"][0]
                mismatches += rewrite["original"] != query or rewrite["text"] != rewrites[query]
            return mismatches

        async def load():
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(timeout=60, limits=limits) as http:
                return await asyncio.gather(*(client(n, http) for n in range(64)))

        mismatches = asyncio.run(load())
        metrics = httpx.get(running.url + "/metrics").text
    assert sum(mismatches) == 0
    assert 'tsqr_requests_total{endpoint="rewrite",status="200"} 64000' in metrics


def test_elasticsearch_inference_endpoint_calls_are_answered_with_the_rewrite(tmp_path):
    """What Elasticsearch's openai service sends for `completion` (x-pack inference,
    OpenAiUnifiedChatCompletionRequestEntity: messages, model, n, stream=false), first with the
    validation input "how big" when the endpoint is created: answered with any engine."""
    import json as _json

    import httpx

    from tsqr_plugins.engine_configs import elasticsearch_inference_endpoint
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(_json.dumps({"why do moths circle lamps?": "transverse orientation"}))
    model = elasticsearch_inference_endpoint("http://127.0.0.1:8000")["service_settings"]["model_id"]
    with RunningService(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True)) as service:
        def ask(content):
            body = {"messages": [{"content": content, "role": "user"}], "model": model, "n": 1, "stream": False}
            return httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=30)

        validation = ask("how big")
        assert validation.status_code == 200
        assert validation.json()["choices"][0]["message"]["content"] == "how big"  # not in the file: fail-open
        answer = ask([{"type": "text", "text": "why do moths circle lamps?"}])
        assert answer.json()["choices"][0]["message"]["content"] == "transverse orientation"
        assert model in [m["id"] for m in httpx.get(f"{service.url}/v1/models").json()["data"]]


def elasticsearch_custom_service_call(endpoint: dict, text: str, secrets: dict) -> tuple[str, dict, bytes]:
    """What Elasticsearch's custom inference service sends for a completion, as its source reads
    (x-pack/plugin/inference .../services/custom, 9.1): ``${input}`` is the first input as a quoted
    JSON string (CompletionParameters: toJson(inputs.get(0))), secret parameters fill the headers and
    the body, and a ``${...}`` left afterwards is an error (ValidatingSubstitutor)."""
    import json as _json
    import re

    settings = endpoint["service_settings"]
    values = {"input": _json.dumps(text), **secrets}

    def fill(template: str) -> str:
        filled = re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)
        if re.search(r"\$\{.*?\}", filled):
            raise ValueError(f"Found placeholder in [{filled}] after replacement call")
        return filled

    return settings["url"], {k: fill(v) for k, v in settings["headers"].items()}, fill(settings["request"]).encode()


def completion_results(answer: dict, path: str) -> list:
    """MapPathExtractor: ``$`` then ``.field`` and ``[*]`` steps; a list gives one result per element."""
    values = [answer]
    for step in path.removeprefix("$").split(".")[1:]:
        name, every = step.removesuffix("[*]"), step.endswith("[*]")
        values = [value[name] for value in values]
        if every:
            values = [item for value in values for item in value]
    return values


def test_elasticsearch_custom_inference_endpoint_calls_v1_rewrite_directly(tmp_path):
    """The `custom` service endpoint (integrations/elasticsearch/inference-endpoint-custom.json)
    against a real `tsqr serve` with a key: the validation call ("how big"), a rewrite, a query with
    quotes and newlines; the answer read with the endpoint's own completion_result path."""
    import json as _json

    import httpx

    from tsqr_plugins.engine_configs import elasticsearch_custom_endpoint
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    hostile = 'why do "moths"\ncircle \\lamps?'
    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(_json.dumps({"why do moths circle lamps?": "transverse orientation", hostile: "dorsal light"}))
    config = ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True, api_key="k1")
    with RunningService(config) as service:
        endpoint = elasticsearch_custom_endpoint(service.url)
        path = endpoint["service_settings"]["response"]["json_parser"]["completion_result"]
        for text, expected in (("how big", "how big"), ("why do moths circle lamps?", "transverse orientation"),
                               (hostile, "dorsal light")):
            url, headers, body = elasticsearch_custom_service_call(endpoint, text, {"api_key": "k1"})
            answer = httpx.post(url, content=body, headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text
            assert completion_results(answer.json(), path) == [expected]
        url, headers, body = elasticsearch_custom_service_call(endpoint, "x", {"api_key": "wrong"})
        assert httpx.post(url, content=body, headers=headers, timeout=30).status_code == 401


def test_repeat_strict_and_both_are_checked_and_answered_as_documented(tmp_path):
    import json as _json

    import httpx

    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(_json.dumps({"q": "rewrite of q"}))
    with RunningService(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True)) as service:
        def ask(**body):
            return httpx.post(f"{service.url}/v1/rewrite", json={"queries": ["q"], **body}, timeout=30)

        for bad, field in (({"repeat": 10**6, "mode": "concat"}, "repeat"), ({"repeat": True}, "repeat"),
                           ({"strict": "false"}, "strict"), ({"strict": 1}, "strict")):
            answer = ask(**bad)
            assert answer.status_code == 400 and field in answer.json()["error"]["message"], bad
        big = httpx.post(f"{service.url}/v1/rewrite", timeout=30, json={
            "queries": ["x" * 30_000] * 100, "mode": "concat", "repeat": 20})  # under the body limit
        assert big.status_code == 413 and "repeat" in big.json()["error"]["message"]
        (both,) = ask(mode="both").json()["rewrites"]
        assert both["texts"] == ["q", "rewrite of q"] and both["text"] == "rewrite of q"
        assert ask(strict=False).status_code == 200


def test_mode_both_answers_both_texts_on_a_fallback_too(tmp_path):
    """A fallback in mode both keeps the documented shape: ``texts`` is [original, rewrite], and
    the rewrite of a fallback is the original, so a caller that fuses the two never finds one
    missing (for a rewriter failure or a query the rewriter has no answer for, mixed in one request)."""
    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(json.dumps({"q": "rewrite of q"}))
    with RunningService(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True)) as service:
        rewritten, missing = post(service.url, {"queries": ["q", "not in the file"], "mode": "both"}).json()["rewrites"]
    with RunningService(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True),
                        CountingEngine(fail=True)) as service:
        (failed,) = post(service.url, {"queries": ["q"], "mode": "both"}).json()["rewrites"]
    assert not rewritten["fallback"] and rewritten["texts"] == ["q", "rewrite of q"]
    for fallback, query in ((missing, "not in the file"), (failed, "q")):
        assert fallback["fallback"] and fallback["reason"], fallback
        assert fallback["texts"] == [query, query] and fallback["text"] == query, fallback


def test_bad_values_are_4xx_naming_the_field_never_500(tmp_path):
    """Lone surrogates, integers with thousands of digits, JSON nested 100k deep, NaN/Infinity,
    wrong types and max_tokens beyond the context: each a 4xx that says what is wrong, in the
    documented error body, with no Python internals in the message."""
    import httpx

    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    engine = CountingEngine()
    engine.context_length = 1024
    with RunningService(engine_config(tmp_path), engine) as running:
        def raw(content: str):
            return httpx.post(f"{running.url}/v1/rewrite", content=content.encode("utf-8", "surrogatepass"),
                              headers={"Content-Type": "application/json"}, timeout=30)

        cases = [
            ('{"queries": ["moths \\ud800 lamps"]}', "lone surrogate"),
            ('{"queries": ["q"], "repeat": 1' + "0" * 5000 + "}", "digits"),
            ('{"queries": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
            ('{"queries": ["q"], "params": {"temperature": NaN}}', "NaN"),
            ('{"queries": ["q"], "params": {"temperature": Infinity}}', "Infinity"),
            ('{"queries": ["q"], "params": {"temperature": "hot"}}', "temperature must be a finite number"),
            ('{"queries": ["q"], "params": {"max_tokens": 5000}}', "max_tokens 5000"),
            ('{"queries": ["q"], "params": {"top_k": 2.5}}', "top_k must be an integer"),
            ('{"queries": ["q"], "params": {"stop": 7}}', "stop must be strings"),
        ]
        for content, message in cases:
            answer = raw(content)
            assert 400 <= answer.status_code < 500, (content[:60], answer.status_code, answer.text[:200])
            error = answer.json()["error"]["message"]
            assert message in error, (content[:60], error)
            assert "not supported between" not in error and "unhashable" not in error
        assert engine.batches == []  # nothing reached the engine
        chat = httpx.post(f"{running.url}/v1/chat/completions", timeout=30, json={
            "model": "counting", "messages": [{"role": "user", "content": "q"}], "max_tokens": 99999})
        assert chat.status_code == 400 and "max_tokens" in chat.json()["error"]["message"]


def test_unknown_paths_and_methods_get_the_documented_error_body():
    import httpx

    from tsqr_plugins.testing.service import RunningService

    with RunningService(file_config()) as running:
        missing = httpx.get(f"{running.url}/v1/rewrites")
        assert missing.status_code == 404 and missing.json() == {
            "error": {"message": "no such endpoint /v1/rewrites", "code": 404}}
        wrong = httpx.get(f"{running.url}/v1/rewrite")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == 405


# ---- several samples ("n") and mode rrf (issue 23)

def openai_config(server, tmp_path=None, **overrides):
    """The service in front of a recording OpenAI-compatible upstream (cached when ``tmp_path``)."""
    cache = {"cache": str(tmp_path / "c.sqlite")} if tmp_path is not None else {"no_cache": True}
    return ServiceConfig(rewriter="openai", upstream=[server.base_url], model="tiny", **cache, **overrides)


def test_n_1_is_the_single_rewrite_with_its_sample():
    from tests.recording_server import RecordingOpenAIServer

    with RecordingOpenAIServer() as server, RunningService(openai_config(server)) as running:
        single = post(running.url, {"queries": ["q"]}).json()
        one = post(running.url, {"queries": ["q"], "n": 1}).json()
        assert all("n" not in request for request in server.requests)  # n=1: a plain generation
    samples = one["rewrites"][0].pop("samples")
    assert one == single
    assert samples == [{"text": "rewrite of q", "fallback": False, "cached": False}]


def test_n_samples_are_one_upstream_call_per_query_each_cached_under_its_index(tmp_path):
    """Sample i of a query is cached under its index: a replay is exact with no upstream call, sample
    0 is the single rewrite, a smaller n is all hits, a larger n samples the query again and answers
    only its missing samples from that call."""
    from tests.recording_server import RecordingOpenAIServer

    queries = ["why do moths circle lamps?", "is composting possible indoors?"]
    with RecordingOpenAIServer() as server, RunningService(openai_config(server, tmp_path)) as running:
        first = post(running.url, {"queries": queries + queries[:1], "n": 3}).json()["rewrites"]
        assert len(server.requests) == 2 and [request["n"] for request in server.requests] == [3, 3]
        for query, rewrite in zip(queries + queries[:1], first):
            texts = [f"rewrite of {query}"] + [f"rewrite of {query} (sample {i})" for i in (1, 2)]
            assert rewrite["original"] == query and [s["text"] for s in rewrite["samples"]] == texts
            assert rewrite["text"] == " ".join(texts) and not rewrite["fallback"]  # joined, as tsqr eval --samples
            assert not any(s["fallback"] or s["cached"] for s in rewrite["samples"])
        replay = post(running.url, {"queries": queries, "n": 3}).json()["rewrites"]
        assert len(server.requests) == 2  # every sample from the cache
        assert [[s["text"] for s in r["samples"]] for r in replay] == [[s["text"] for s in r["samples"]] for r in first[:2]]
        assert all(r["cached"] and all(s["cached"] for s in r["samples"]) for r in replay)
        single = post(running.url, {"queries": queries}).json()["rewrites"]
        assert [r["text"] for r in single] == [r["samples"][0]["text"] for r in first[:2]] and all(r["cached"] for r in single)
        fewer = post(running.url, {"queries": queries, "n": 2}).json()["rewrites"]
        assert len(server.requests) == 2 and [r["samples"] for r in fewer] == [r["samples"][:2] for r in replay]
        more = post(running.url, {"queries": queries[:1], "n": 4}).json()["rewrites"][0]
        assert [request.get("n") for request in server.requests[2:]] == [4]
        assert [s["cached"] for s in more["samples"]] == [True, True, True, False]
        assert [s["text"] for s in more["samples"][:3]] == [s["text"] for s in replay[0]["samples"]]


def test_a_fallen_back_sample_and_mode_rrf(tmp_path):
    """A sample that fell back carries its reason, its text is its query, it is not cached and adds
    no search in mode rrf; the fusion's weights follow the searches, the original's first."""
    from tests.recording_server import RecordingOpenAIServer

    def answer(body):  # "bad" queries get an empty sample 0; the server appends " (sample i)" to the others
        query = body["messages"][-1]["content"].split("Query: ")[-1].strip()
        return "" if query.startswith("bad") else f"rewrite of {query}"

    with RecordingOpenAIServer(answer=answer) as server, RunningService(openai_config(server, tmp_path)) as running:
        body = {"queries": ["bad q", "good q"], "n": 3, "mode": "rrf", "rrf_k": 10, "original_weight": 2,
                "rewrite_weight": 0.5}
        bad, good = post(running.url, body).json()["rewrites"]
        assert [s["fallback"] for s in bad["samples"]] == [True, False, False] and bad["samples"][0]["reason"]
        assert bad["samples"][0]["text"] == "bad q" and not bad["fallback"]
        assert bad["searches"] == ["bad q", " (sample 1)", " (sample 2)"]
        assert bad["fusion"] == {"method": "rrf", "k": 10, "weights": [2, 0.5, 0.5]}
        assert good["searches"] == ["good q", "rewrite of good q", "rewrite of good q (sample 1)",
                                    "rewrite of good q (sample 2)"]
        assert good["fusion"]["weights"] == [2, 0.5, 0.5, 0.5]
        calls = len(server.requests)
        again = post(running.url, body).json()["rewrites"]
        assert len(server.requests) == calls + 1  # only the query with a fallen-back sample, sampled again
        assert [s["cached"] for s in again[0]["samples"]] == [False, True, True]
        (plain,) = post(running.url, {"queries": ["good q"], "mode": "rrf"}).json()["rewrites"]
        assert plain["searches"] == ["good q", "rewrite of good q"] and "samples" not in plain
        assert plain["fusion"] == {"method": "rrf", "k": 60, "weights": [1.0, 1.0]}
    with RunningService(file_config(no_cache=True), CountingEngine(fail=True)) as running:
        (failed,) = post(running.url, {"queries": ["q"], "n": 2, "mode": "rrf"}).json()["rewrites"]
        (concat,) = post(running.url, {"queries": ["q"], "n": 2, "mode": "concat", "repeat": 2}).json()["rewrites"]
    assert failed["fallback"] and failed["reason"] and failed["text"] == "q"
    assert failed["searches"] == ["q"] and failed["fusion"]["weights"] == [1.0]
    assert [s["text"] for s in failed["samples"]] == ["q", "q"] and all(s["fallback"] for s in failed["samples"])
    assert concat["fallback"] and concat["text"] == "q"  # a fallback's text is its query, once


def test_samples_and_rrf_fields_are_checked(tmp_path):
    from tsqr_plugins.errors import InputError

    with pytest.raises(InputError, match="max_samples"):
        file_config(max_samples=0)
    engine = CountingEngine()
    with RunningService(engine_config(tmp_path, max_samples=4), engine) as running:
        cases = [
            ({"n": 0}, "'n'"), ({"n": 5}, "from 1 to 4"), ({"n": True}, "'n'"), ({"n": "3"}, "'n'"), ({"n": 2.5}, "'n'"),
            ({"mode": "rrf", "rrf_k": -1}, "'rrf_k'"), ({"mode": "rrf", "rrf_k": "60"}, "'rrf_k'"),
            ({"mode": "rrf", "original_weight": -0.5}, "'original_weight'"),
            ({"mode": "rrf", "rewrite_weight": True}, "'rewrite_weight'"),
            ({"rrf_k": 60}, "mode rrf"), ({"mode": "concat", "original_weight": 1}, "mode rrf"),
            ({"mode": "fuse"}, "rrf"),
        ]
        for fields, message in cases:
            answer = post(running.url, {"queries": ["q"], **fields})
            assert answer.status_code == 400 and message in answer.json()["error"]["message"], (fields, answer.text)
        matched = post(running.url, {"match": {"query": "q"}, "n": 2})
        assert matched.status_code == 400 and "'match'" in matched.json()["error"]["message"]
        # each sample (a fallback's is its query) and the joined text: 4 copies of 3 M characters
        big = post(running.url, {"queries": ["x" * 30_000] * 100, "n": 2})
        assert big.status_code == 413 and "'n'" in big.json()["error"]["message"]
        chat = httpx.post(f"{running.url}/v1/chat/completions", timeout=30, json={
            "model": "tsqr-rewrite", "n": 2, "messages": [{"role": "user", "content": "q"}]})
        assert chat.status_code == 400 and "/v1/rewrite" in chat.json()["error"]["message"]
    assert engine.batches == []  # nothing reached the rewriter


def test_openai_backend_asks_the_service_for_samples_in_one_request(tmp_path):
    """The Python client of the service (the openai backend) samples over it: one chat request
    with n per query, which the service answers with one upstream request with n."""
    from tests.recording_server import RecordingOpenAIServer

    queries = ["why do moths circle lamps?", "is composting possible indoors?"]
    with RecordingOpenAIServer() as server, RunningService(openai_config(server, tmp_path)) as running:
        client = OpenAIBackend(running.url + "/v1")
        rows = Rewriter(client).rewrite_samples(queries, 3)
        assert [request["n"] for request in server.requests] == [3, 3]
        other = httpx.post(running.url + "/v1/chat/completions", timeout=30, json={
            "n": 2, "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "q"}]})
        client.close()
    for query, row in zip(queries, rows):
        assert [r.text for r in row] == [f"rewrite of {query}"] + [f"rewrite of {query} (sample {i})" for i in (1, 2)]
        assert not any(r.fallback for r in row)
    assert other.status_code == 400 and "own prompts" in other.json()["error"]["message"]


def test_one_batch_window_keeps_single_rewrites_and_samples_apart(tmp_path):
    """Requests with and without n that meet in one batch window go to the rewriter as separate
    calls (a backend call samples one n), and each gets its own shape."""
    engine = CountingEngine(delay=0.05)
    with RunningService(engine_config(tmp_path, max_wait_ms=300), engine) as running:
        async def together():
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*(client.post(running.url + "/v1/rewrite", json=body) for body in (
                    {"queries": ["a"]}, {"queries": ["b"], "n": 3}, {"queries": ["c"], "n": 2})))
        single, three, two = [response.json()["rewrites"][0] for response in asyncio.run(together())]
    assert single["text"] == "rw: a" and "samples" not in single
    assert [s["text"] for s in three["samples"]] == ["rw: b"] * 3 and [s["text"] for s in two["samples"]] == ["rw: c"] * 2
    assert sorted(engine.batches) == [["a"], ["b"], ["b"], ["b"], ["c"], ["c"]]  # one generate per sample here


class FreshEngine(Backend):
    """Answers a new text on every generation ('rw<call>: <query>', as a sampling model would),
    after ``delay`` seconds."""

    NAME = "fresh"
    model_id = "fresh"

    def __init__(self, delay=0.0):
        self.delay, self.calls = delay, 0
        self._lock = threading.Lock()

    def generate(self, queries, prompt, params):
        time.sleep(self.delay)
        with self._lock:
            self.calls += 1
            return [Completion(text=f"rw{self.calls}: {q}") for q in queries]


def test_concurrent_requests_with_different_n_answer_what_the_cache_keeps(tmp_path):
    """The same query asked at once without n, with n=2 and with n=3 is three generations (different
    n never share one), but one cache entry per sample index: each answer is what the cache keeps, so
    sample 0 is the single rewrite everywhere and a replay answers the same texts."""
    engine = FreshEngine(delay=0.2)
    with RunningService(engine_config(tmp_path, concurrent_batches=3), engine) as running:
        async def together():
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*(client.post(running.url + "/v1/rewrite", json=body) for body in (
                    {"queries": ["q"]}, {"queries": ["q"], "n": 2}, {"queries": ["q"], "n": 3})))
        first = [[s["text"] for s in r.json()["rewrites"][0].get("samples", [r.json()["rewrites"][0]])]
                 for r in asyncio.run(together())]
        again = [[s["text"] for s in post(running.url, body).json()["rewrites"][0].get("samples", [None])]
                 for body in ({"queries": ["q"], "n": 1}, {"queries": ["q"], "n": 2}, {"queries": ["q"], "n": 3})]
    assert engine.calls > 3  # the three requests were generated apart
    assert first[0][0] == first[1][0] == first[2][0], first
    assert first[1] == first[2][:2], first
    assert again == first, (again, first)


def test_an_upstream_answering_fewer_choices_than_n_keeps_the_ones_it_sent(tmp_path):
    """An OpenAI-compatible server that answers 2 choices for n=3 (or ignores n: 1 choice): the choices
    it sent are samples, each missing one a fallback whose reason says so, and only those are cached."""
    from tests.recording_server import RecordingOpenAIServer

    def choices(*indexes):
        return json.dumps({"choices": [{"index": i, "finish_reason": "stop", "message": {
            "role": "assistant", "content": f"sample {i}"}} for i in indexes]}).encode()

    with RecordingOpenAIServer(malformed=choices(1, 0)) as server, RunningService(openai_config(server, tmp_path)) as running:
        (fewer,) = post(running.url, {"queries": ["q"], "n": 3, "mode": "rrf"}).json()["rewrites"]
        server.malformed = choices(0)
        (ignored,) = post(running.url, {"queries": ["p"], "n": 2}).json()["rewrites"]
        server.malformed = choices(0, 1, 2)
        (again,) = post(running.url, {"queries": ["q"], "n": 3}).json()["rewrites"]
    assert [s["text"] for s in fewer["samples"]] == ["sample 0", "sample 1", "q"] and not fewer["fallback"]
    assert fewer["samples"][2]["fallback"] and "no choice 2" in fewer["samples"][2]["reason"]
    assert fewer["searches"] == ["q", "sample 0", "sample 1"]
    assert [s["fallback"] for s in ignored["samples"]] == [False, True] and "no choice 1" in ignored["samples"][1]["reason"]
    assert [s["cached"] for s in again["samples"]] == [True, True, False]
    assert [s["text"] for s in again["samples"]] == ["sample 0", "sample 1", "sample 2"]


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_a_time_budget_that_is_no_positive_number_is_refused_at_start(timeout):
    """tsqr serve --timeout 0 (or nan, inf) started and then answered every request 400 "'timeout'
    must be a positive number", a field the client never sent."""
    from tsqr_plugins.errors import InputError

    with pytest.raises(InputError, match="timeout"):
        file_config(timeout=timeout)


def test_a_request_asking_more_generations_than_the_queue_holds_is_413_not_a_429_for_ever(tmp_path):
    """--max-queue counts generations (a query with n samples is n): a request that can never fit
    gets 413 saying what to send instead; one that fits is answered."""
    with RunningService(engine_config(tmp_path, max_queue=4)) as running:
        refused = post(running.url, {"queries": ["why do moths circle lamps?", "is composting possible indoors?"],
                                     "n": 3})
        assert refused.status_code == 413 and "asks for 6 generations" in refused.text and "--max-queue" in refused.text
        answered = post(running.url, {"queries": ["why do moths circle lamps?"], "n": 3})
        assert answered.status_code == 200 and len(answered.json()["rewrites"][0]["samples"]) == 3
