"""`tsqr proxy` over real HTTP: the proxy runs under uvicorn on a loopback port in front of a recording
HTTP server (tests/search_server.py — it records what it receives; it is not a search engine)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.search_server import RecordingSearchServer
from tsqr_plugins import Rewriter
from tsqr_plugins.adapters.stage import StageSettings
from tsqr_plugins.errors import InputError
from tsqr_plugins.testing.conformance import CORPUS, QUERY, REWRITE, FailingBackend, file_rewriter, slow_rewriter

pytest.importorskip("starlette", reason="tsqr proxy needs the 'serve' extra")
pytest.importorskip("uvicorn", reason="tsqr proxy needs the 'serve' extra")

from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app, is_search_path  # noqa: E402
from tsqr_plugins.testing.service import RunningApp, free_port  # noqa: E402


def running_proxy(upstream_url, rewriter, **settings):
    max_body = settings.pop("max_body_bytes", 10 * 1024 * 1024)
    proxy = SearchProxy(upstream_url, rewriter, StageSettings(**settings), max_body_bytes=max_body)
    return RunningApp(create_proxy_app(proxy))


SEARCH = {"query": {"match": {"text": QUERY}}, "size": 3}


def test_search_bodies_are_rewritten(tmp_path):
    with RecordingSearchServer(CORPUS) as upstream, running_proxy(upstream.url, file_rewriter(tmp_path)) as proxy:
        response = httpx.post(f"{proxy.url}/docs/_search?pretty=true", json=SEARCH)
        assert response.status_code == 200 and response.json()["hits"]["hits"] == []
        assert response.headers["X-Tsqr-Rewritten"] == "1" and response.headers["X-Tsqr-Fallback"] == "0"
        (sent,) = upstream.searches()
        assert sent["path"] == "/docs/_search?pretty=true"
        assert sent["body"] == {"query": {"match": {"text": {"query": REWRITE}}}, "size": 3}

        upstream.requests.clear()
        response = httpx.request("GET", f"{proxy.url}/_search", content=json.dumps(SEARCH))  # GET with a body
        assert upstream.searches()[0]["body"]["query"] == {"match": {"text": {"query": REWRITE}}}


def test_bm25q_asks_termvectors_with_the_callers_credentials(tmp_path):
    with RecordingSearchServer(CORPUS) as upstream, \
            running_proxy(upstream.url, file_rewriter(tmp_path), scoring="bm25q") as proxy:
        response = httpx.post(f"{proxy.url}/docs/_search", json=SEARCH, headers={"Authorization": "ApiKey abc"})
        assert response.status_code == 200
        termvectors, search = upstream.requests
        # routed: one shard's statistics, the same shard every time
        assert termvectors["path"] == "/docs/_termvectors?routing=tsqr" and termvectors["headers"]["authorization"] == "ApiKey abc"
        assert search["headers"]["authorization"] == "ApiKey abc"
        assert {c["term"]["text"]["value"] for c in search["body"]["query"]["bool"]["should"]} >= {"dorsal", "moon"}
        assert response.headers["X-Tsqr-Dropped-Terms"] == "0"


def test_everything_else_passes_through_unchanged(tmp_path):
    big = b"x" * (3 * 1024 * 1024)
    with RecordingSearchServer(CORPUS) as upstream, running_proxy(upstream.url, file_rewriter(tmp_path)) as proxy:
        response = httpx.put(f"{proxy.url}/docs/_doc/1?refresh=true", content=b'{"text": "a moth"}',
                             headers={"X-Custom": "kept", "Content-Type": "application/json"})
        assert response.status_code == 200 and response.headers["X-Upstream"] == "recording"
        (sent,) = upstream.requests
        assert (sent["method"], sent["path"], sent["raw"]) == ("PUT", "/docs/_doc/1?refresh=true", b'{"text": "a moth"}')
        assert sent["headers"]["x-custom"] == "kept"
        assert response.json()["echo"]["body"] == {"text": "a moth"}

        missing = httpx.get(f"{proxy.url}/missing/_doc/1")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "index_not_found_exception"

        upstream.requests.clear()
        msearch = b'{"index": "docs"}\n{"query": {"match": {"text": "moths"}}}\n'
        httpx.post(f"{proxy.url}/_msearch", content=msearch, headers={"Content-Type": "application/x-ndjson"})
        assert upstream.requests[0]["raw"] == msearch  # not a _search body: untouched

        upstream.requests.clear()
        httpx.post(f"{proxy.url}/docs/_search", content=b"not json {")
        assert upstream.requests[0]["raw"] == b"not json {"  # the engine answers for malformed bodies

        upstream.requests.clear()
        httpx.post(f"{proxy.url}/docs/_bulk", content=big)
        assert upstream.requests[0]["raw"] == big  # streamed through intact

        upstream.requests.clear()
        httpx.get(f"{proxy.url}//evil.example/x")
        # Sent to the upstream, nowhere else (http.server itself folds the leading "//").
        assert upstream.requests[0]["path"].endswith("/evil.example/x")


def test_fail_open_strict_and_limits(tmp_path):
    body = json.dumps(SEARCH).encode()
    with RecordingSearchServer(CORPUS) as upstream:
        with running_proxy(upstream.url, Rewriter(FailingBackend())) as proxy:
            response = httpx.post(f"{proxy.url}/docs/_search", content=body)
            assert response.status_code == 200 and response.headers["X-Tsqr-Fallback"] == "1"
            assert upstream.searches()[0]["raw"] == body  # the caller's bytes, as they came
        upstream.requests.clear()
        with running_proxy(upstream.url, Rewriter(FailingBackend(), strict=True)) as proxy:
            response = httpx.post(f"{proxy.url}/docs/_search", content=body)
            assert response.status_code == 502 and "unreachable" in response.json()["error"]
            assert upstream.requests == []
        with running_proxy(upstream.url, file_rewriter(tmp_path), max_body_bytes=100) as proxy:
            response = httpx.post(f"{proxy.url}/docs/_search", json={"query": {"match": {"text": "x" * 200}}})
            assert response.status_code == 413

    with running_proxy(f"http://127.0.0.1:{free_port()}", file_rewriter(tmp_path)) as proxy:
        response = httpx.post(f"{proxy.url}/docs/_search", json=SEARCH)
        assert response.status_code == 502 and "unreachable" in response.json()["error"]


def test_search_paths_and_upstream_checks():
    assert is_search_path("/_search") and is_search_path("/docs/_search") and is_search_path("/a,b/_search")
    assert not any(is_search_path(p) for p in ("/_msearch", "/_search/scroll", "/docs/_search/template",
                                               "/_all/_doc/_search", "/_nodes/_search"))
    with pytest.raises(InputError, match="http"):
        SearchProxy("ftp://127.0.0.1:9200", None)


def test_cli_rejects_a_bad_upstream_before_serving(tmp_path, capsys):
    from tsqr_plugins.cli import main

    rewrites = tmp_path / "r.json"
    rewrites.write_text(json.dumps({QUERY: REWRITE}))
    assert main(["proxy", "--search-node", "localhost:9200", "--rewriter", f"file:{rewrites}", "--no-cache"]) == 2
    assert "--search-node must be an http(s) URL" in capsys.readouterr().err


class HeaderUpstream:
    """An HTTP server that answers with repeated and connection-specific fields and records the
    fields it received (HTTP-intermediary behaviour; nothing engine-specific)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler

        from tests.background_server import BackgroundServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                received.append({k.lower(): v for k, v in self.headers.items()})
                body = b'{"ok": true}'
                self.send_response(200)
                for field, value in (("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"),
                                     ("Connection", "X-Hop"), ("X-Hop", "secret"), ("Proxy-Connection", "keep-alive"),
                                     ("Content-Type", "application/json"), ("Content-Length", str(len(body)))):
                    self.send_header(field, value)
                self.end_headers()
                self.wfile.write(body)

        class Server(BackgroundServer):
            def _handler(self):
                return Handler

        self.server = Server()
        self.url = self.server.url

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)


def test_the_cli_proxy_relays_fields_as_an_http_intermediary_must(tmp_path):
    """RFC 9110 7.6.1: repeated fields kept, connection-specific ones dropped, no Accept-Encoding the
    client did not send, one Server/Date (the upstream's)."""
    import os
    import subprocess
    import sys
    import time

    port = free_port()
    with HeaderUpstream() as upstream:
        process = subprocess.Popen(
            [sys.executable, "-m", "tsqr_plugins.cli", "proxy", "--search-node", upstream.url, "--port", str(port),
             "--rewriter", f"file:{tmp_path / 'none.json'}", "--on-missing", "fallback"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        (tmp_path / "none.json").write_text("{}")
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/x", timeout=2)
                    break
                except httpx.TransportError:
                    assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
                    time.sleep(0.2)
            upstream.received.clear()
            with httpx.Client(headers={"Accept-Encoding": ""}) as bare:
                request = bare.build_request("GET", f"http://127.0.0.1:{port}/x")
                del request.headers["accept-encoding"]
                answer = bare.send(request)
            assert answer.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
            assert "x-hop" not in answer.headers and "proxy-connection" not in answer.headers
            assert len(answer.headers.get_list("server")) <= 1 and len(answer.headers.get_list("date")) <= 1
            assert "accept-encoding" not in upstream.received[-1]
            httpx.get(f"http://127.0.0.1:{port}/x", headers={"Accept-Encoding": "gzip"})
            assert upstream.received[-1]["accept-encoding"] == "gzip"
        finally:
            process.terminate()
            process.wait(30)


def test_a_slow_upstream_is_a_504_within_the_proxys_time_budget(tmp_path):
    import time
    from http.server import BaseHTTPRequestHandler

    from tests.background_server import BackgroundServer

    class Slow(BackgroundServer):
        def _handler(self):
            class Handler(BaseHTTPRequestHandler):
                def log_message(self, *args):
                    pass

                def do_GET(self):
                    time.sleep(3)
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            return Handler

    with Slow() as upstream:
        proxy = SearchProxy(upstream.url, file_rewriter(tmp_path), timeout=0.5)
        with RunningApp(create_proxy_app(proxy)) as running:
            answer = httpx.get(f"{running.url}/_cluster/health", timeout=30)
            assert answer.status_code == 504 and "did not answer within 0.5 s" in answer.json()["error"]


# -- --fusion rrf and --budget (anytime) --------------------------------------------------------


def fusing_proxy(upstream_url, rewriter, timeout=60.0, **settings):
    proxy = SearchProxy(upstream_url, rewriter, StageSettings(fusion="rrf", **settings), timeout=timeout)
    return RunningApp(create_proxy_app(proxy))


def fused_of(response) -> list[tuple[str, float]]:
    return [(hit["_id"], hit["_score"]) for hit in response.json()["hits"]["hits"]]


def msearches(server) -> list[dict]:
    return [r for r in server.requests if r["path"].split("?")[0].endswith("/_msearch")]


class RefusingServer:
    """A RankingServer whose answer to the rewritten search is ``refusal`` (an msearch item error, a
    clause-limit error, shard failures), or whose answer to the original is an error."""

    def __new__(cls, refusal: dict, refuse_original: bool = False):
        from tests.test_search_stage import RankingServer

        class Refusing(RankingServer):
            def search_answer(self, body):
                rewritten = REWRITE in json.dumps(body or {})
                if rewritten != refuse_original:
                    return refusal
                return super().search_answer(body)

        return Refusing(CORPUS)


def test_a_fusing_proxy_sends_one_msearch_and_answers_the_fusion(tmp_path):
    from tests.test_search_stage import RankingServer, expected_fusion

    aggs = {"matched": {"value_count": {"field": "_id"}}}
    body = {"query": {"match": {"text": QUERY}}, "from": 1, "size": 2, "aggs": aggs}
    with RankingServer(CORPUS) as upstream, fusing_proxy(upstream.url, file_rewriter(tmp_path), rewrite_weight=2.0) as proxy:
        response = httpx.post(f"{proxy.url}/docs/_search?routing=r1&request_cache&typed_keys=true&format=json",
                              json=body, headers={"Authorization": "ApiKey abc"})
        assert response.status_code == 200 and response.headers["X-Tsqr-Fusion"] == "rrf"
        assert response.headers["X-Tsqr-Rewritten"] == "1" and "X-Tsqr-Fusion-Skipped" not in response.headers
        assert upstream.searches() == []
        (sent,) = msearches(upstream)  # one request, two items
        assert sent["path"] == "/docs/_msearch?typed_keys=true"  # what _msearch itself takes
        assert sent["headers"]["content-type"] == "application/x-ndjson" and sent["headers"]["authorization"] == "ApiKey abc"
        header, first, header2, second = sent["ndjson"]
        assert header == header2 == {"routing": "r1", "request_cache": True}  # a bare ?request_cache is true
        assert first == {**body, "from": 0, "size": 3}
        assert second == {"query": {"match": {"text": {"query": REWRITE}}}, "from": 0, "size": 3}  # no aggs
        assert fused_of(response) == expected_fusion(upstream, first, second, weights=(1.0, 2.0))[1:3]
        answer = response.json()
        assert answer["aggregations"] == upstream.search_answer(first)["aggregations"] and "status" not in answer
        assert response.headers["X-Elastic-Product"] == "Elasticsearch"  # elasticsearch-py checks it

        pretty = httpx.post(f"{proxy.url}/_search?pretty", json=body)
        assert msearches(upstream)[-1]["path"] == "/_msearch?pretty="
        assert pretty.text.startswith('{\n  "took"') and fused_of(pretty) == fused_of(response)

        url = httpx.URL(proxy.url).copy_with(raw_path=b"/d%6Fcs/%5Fsearch/")  # escapes kept, one hop
        assert httpx.post(url, json=body).headers["X-Tsqr-Fusion"] == "rrf"
        assert msearches(upstream)[-1]["path"] == "/d%6Fcs/_msearch"


@pytest.mark.parametrize("query, body, headers, reason", [
    ("", {"sort": [{"date": "desc"}]}, {}, "sorted by other than _score"),
    ("", {"size": 0}, {}, "size 0"),
    ("", {"search_after": [1]}, {}, "search_after"),
    ("?q=moths", {}, {}, "'q' has no place in an _msearch item"),
    ("?filter_path=hits.hits._id", {}, {}, "filter_path"),
    ("?scroll=1m", {}, {}, "scroll"),
    ("?routing=a&routing=b", {}, {}, "more than once"),
    ("?request_cache=maybe", {}, {}, "not true or false"),
    ("", {}, {"Accept": "application/yaml"}, "Accept is not JSON"),
    ("", {}, {"Content-Type": "application/cbor"}, "Content-Type is not JSON"),
])
def test_a_search_fusion_cannot_answer_faithfully_goes_out_as_without_fusion(tmp_path, query, body, headers, reason):
    from tests.test_search_stage import RankingServer

    document = {"query": {"match": {"text": QUERY}}, **body}
    with RankingServer(CORPUS) as upstream, fusing_proxy(upstream.url, file_rewriter(tmp_path)) as proxy:
        sent_headers = {"Content-Type": "application/json", **headers}
        response = httpx.post(f"{proxy.url}/docs/_search{query}", content=json.dumps(document), headers=sent_headers)
        assert msearches(upstream) == []
        (search,) = upstream.searches()
        assert search["path"] == f"/docs/_search{query}"
        assert search["body"]["query"] == {"match": {"text": {"query": REWRITE}}}  # as mode="replace"
        assert reason in response.headers["X-Tsqr-Fusion-Skipped"] and response.headers["X-Tsqr-Rewritten"] == "1"


def test_fusion_skips_searches_with_nothing_to_rewrite_and_failed_rewrites(tmp_path):
    from tests.test_search_stage import RankingServer

    with RankingServer(CORPUS) as upstream:
        with fusing_proxy(upstream.url, file_rewriter(tmp_path)) as proxy:
            raw = b'{"query": {"term": {"text": "moths"}}}'
            response = httpx.post(f"{proxy.url}/docs/_search", content=raw, headers={"Content-Type": "application/json"})
            assert response.headers["X-Tsqr-Fusion-Skipped"] == "no text query to rewrite"
            assert [r["raw"] for r in upstream.requests] == [raw]
        upstream.requests.clear()
        raw = json.dumps({"query": {"match": {"text": QUERY}}}).encode()
        with fusing_proxy(upstream.url, Rewriter(FailingBackend())) as proxy:
            response = httpx.post(f"{proxy.url}/docs/_search", content=raw, headers={"Content-Type": "application/json"})
            assert response.status_code == 200 and response.headers["X-Tsqr-Fallback"] == "1"
            assert "nothing was rewritten" in response.headers["X-Tsqr-Fusion-Skipped"]
            assert [r["raw"] for r in upstream.requests] == [raw]  # the caller's bytes, no _msearch
        upstream.requests.clear()
        with fusing_proxy(upstream.url, Rewriter(FailingBackend(), strict=True)) as proxy:
            response = httpx.post(f"{proxy.url}/docs/_search", content=raw, headers={"Content-Type": "application/json"})
            assert response.status_code == 502 and upstream.requests == []


CLAUSE_LIMIT = {"error": {"type": "search_phase_execution_exception", "caused_by": {
    "type": "too_many_clauses", "reason": "too_many_clauses: maxClauseCount is set to 1024"}}, "status": 400}


@pytest.mark.parametrize("budget", [None, 5.0])
@pytest.mark.parametrize("refusal, rewritten", [
    (CLAUSE_LIMIT, "0"),
    ({"error": {"type": "illegal_argument_exception", "reason": "bad\r\nX-Injected: 1 ünïcode"}, "status": 400}, "1"),
    ({"took": 1, "_shards": {"total": 2, "successful": 1, "failed": 1, "failures": [{"reason": "gone"}]},
      "hits": {"hits": []}}, "1"),
])
def test_a_refused_rewritten_search_answers_the_originals_page(tmp_path, refusal, rewritten, budget):
    """Never a 5xx or an empty fusion for the rewrite's failure: the original's own page, said so;
    a rewrite past the clause limit counts as a fallback (as without fusion)."""
    from tests.test_search_stage import RankingServer

    body = {"query": {"match": {"text": QUERY}}, "from": 1, "size": 2}
    with RefusingServer(refusal) as upstream, fusing_proxy(upstream.url, file_rewriter(tmp_path), budget=budget) as proxy:
        response = httpx.post(f"{proxy.url}/docs/_search", json=body)
        assert response.status_code == 200, response.text
        expected = RankingServer.search_answer(upstream, {**body, "from": 0, "size": 3})["hits"]["hits"][1:3]
        assert response.json()["hits"]["hits"] == expected
        skipped = response.headers["X-Tsqr-Fusion-Skipped"]
        assert skipped.startswith("the engine refused the rewritten search") and "X-Injected" not in response.headers
        assert all(" " <= ch <= "~" for ch in skipped)
        assert response.headers["X-Tsqr-Rewritten"] == rewritten and "X-Tsqr-Fusion" not in response.headers


@pytest.mark.parametrize("budget", [None, 5.0])
def test_a_failed_original_search_is_the_nodes_own_answer_to_it(tmp_path, budget):
    missing = {"error": {"type": "index_not_found_exception"}, "status": 404}
    body = {"query": {"match": {"text": QUERY}}, "size": 2}
    with RefusingServer(missing, refuse_original=True) as upstream, \
            fusing_proxy(upstream.url, file_rewriter(tmp_path), budget=budget) as proxy:
        response = httpx.post(f"{proxy.url}/docs/_search", json=body)
        assert response.json()["error"] == missing["error"]
        assert "original search failed" in response.headers["X-Tsqr-Fusion-Skipped"]
        if budget is None:  # the caller's own search relayed after the _msearch
            assert upstream.searches()[-1]["body"] == body


def test_anytime_answers_the_original_when_the_rewrite_is_late_and_the_fusion_when_in_time(tmp_path):
    import time

    from tests.test_search_stage import RankingServer, expected_fusion, originals_first

    query = {"match": {"text": QUERY}}
    with RankingServer(CORPUS) as upstream:
        with fusing_proxy(upstream.url, slow_rewriter(tmp_path, 3.0), budget=0.3) as proxy:
            started = time.monotonic()
            response = httpx.post(f"{proxy.url}/docs/_search", json={"query": query, "from": 1, "size": 2}, timeout=30)
            assert time.monotonic() - started < 0.3 + 1.0  # the budget and one local search, not the model's 3 s
            assert response.headers["X-Tsqr-Rewrite-In-Time"] == "0" and "budget" in response.headers["X-Tsqr-Fusion-Skipped"]
            assert response.headers["X-Tsqr-Fallback"] == "1" and response.headers["X-Tsqr-Rewritten"] == "0"
            original = upstream.search_answer({"query": query, "size": 3})
            assert response.json()["hits"]["hits"] == original["hits"]["hits"][1:3]
            assert len(upstream.searches()) == 1 and msearches(upstream) == []

        upstream.requests.clear()
        with fusing_proxy(upstream.url, slow_rewriter(tmp_path, 0.0), budget=5.0) as proxy:
            response = httpx.post(f"{proxy.url}/docs/_search?routing=r", json={"query": query, "size": 3}, timeout=30)
            first, second = originals_first(upstream.searches())  # sent concurrently: either may come first
            assert all(r["path"] == "/docs/_search?routing=r" for r in upstream.searches())
            assert fused_of(response) == expected_fusion(upstream, first, second)[:3]
            assert response.headers["X-Tsqr-Rewrite-In-Time"] == "1" and response.headers["X-Tsqr-Fusion"] == "rrf"

        with fusing_proxy(upstream.url, slow_rewriter(tmp_path, 3.0, strict=True), budget=0.2) as proxy:
            response = httpx.post(f"{proxy.url}/docs/_search", json={"query": query}, timeout=30)
            assert response.status_code == 502 and "budget" in response.json()["error"]


def test_a_search_not_fused_under_a_budget_has_its_rewrite_bounded_by_it(tmp_path):
    import time

    from tests.test_search_stage import RankingServer

    with RankingServer(CORPUS) as upstream, fusing_proxy(upstream.url, slow_rewriter(tmp_path, 3.0), budget=0.3) as proxy:
        started = time.monotonic()
        response = httpx.post(f"{proxy.url}/docs/_search", json={"query": {"match": {"text": QUERY}}, "size": 0})
        assert time.monotonic() - started < 0.3 + 1.0
        assert response.headers["X-Tsqr-Fallback"] == "1" and "size 0" in response.headers["X-Tsqr-Fusion-Skipped"]


def test_the_search_node_timeout_covers_the_msearch(tmp_path):
    import time

    from tests.test_search_stage import RankingServer

    class Slow(RankingServer):
        def search_answer(self, body):
            time.sleep(3)
            return super().search_answer(body)

    for budget in (None, 5.0):
        with Slow(CORPUS) as upstream, fusing_proxy(upstream.url, file_rewriter(tmp_path), timeout=0.5, budget=budget) as proxy:
            started = time.monotonic()
            response = httpx.post(f"{proxy.url}/docs/_search", json={"query": {"match": {"text": QUERY}}}, timeout=30)
            assert response.status_code == 504 and time.monotonic() - started < 0.5 + 1.0, budget


def test_split_request_puts_each_parameter_where_msearch_takes_it():
    from tsqr_plugins.adapters import fusedsearch

    body = {"query": {"match_all": {}}, "from": 2, "size": 3}
    target, reason = fusedsearch.split_request(
        body, "preference=_local&allow_partial_search_results=false&expand_wildcards=open,hidden&search_type="
        "dfs_query_then_fetch&rest_total_hits_as_int=true&max_concurrent_shard_requests=2&error_trace")
    assert reason is None and (target.start, target.size, target.depth) == (2, 3, 5)
    assert target.header == {"preference": "_local", "allow_partial_search_results": False,
                             "expand_wildcards": "open,hidden", "search_type": "dfs_query_then_fetch"}
    assert target.call == [("rest_total_hits_as_int", "true"), ("max_concurrent_shard_requests", "2"),
                           ("error_trace", "")]
    assert fusedsearch.split_request(body, "index=other")[1].startswith("an index in the query string")
    assert fusedsearch.split_request(body, "format=yaml")[1].startswith("the answer is asked in a format")
    from tsqr_plugins.adapters.proxyfusion import header_text, ndjson_type

    assert ndjson_type("application/vnd.elasticsearch+json; compatible-with=9") == \
        "application/vnd.elasticsearch+x-ndjson; compatible-with=9"
    assert ndjson_type("application/json; charset=UTF-8") == "application/x-ndjson"
    assert header_text("a\r\nb: ü" + "x" * 400) == "a??b: ?" + "x" * 293
    lines = fusedsearch.ndjson(target, target).decode().split("\n")
    assert len(lines) == 5 and lines[-1] == "" and json.loads(lines[1]) == {**body, "from": 0, "size": 5}


def test_cli_budget_needs_fusion(tmp_path, capsys):
    from tsqr_plugins.cli import main

    rewrites = tmp_path / "r.json"
    rewrites.write_text(json.dumps({QUERY: REWRITE}))
    code = main(["proxy", "--search-node", "http://127.0.0.1:9", "--rewriter", f"file:{rewrites}", "--no-cache",
                 "--budget", "0.5"])
    assert code == 2 and "--fusion rrf" in capsys.readouterr().err


def test_a_late_rewrite_runs_on_and_fills_the_cache_for_the_next_search(tmp_path):
    """Anytime does not cancel the rewrite it stops waiting for: it finishes in its worker thread
    and lands in the rewrite cache, so the same query is fused next time (as with the client stages)."""
    import time

    from tests.test_search_stage import RankingServer
    from tsqr_plugins.backends import with_cache
    from tsqr_plugins.backends.base import Backend, Completion

    class SlowModel(Backend):
        NAME = "slow-model"
        model_id = "slow-model"
        calls = 0

        def generate(self, queries, prompt, params):
            SlowModel.calls += 1
            time.sleep(1.0)
            return [Completion(text=f"<think>x</think><answer>{REWRITE}</answer>") for _ in queries]

    rewriter = Rewriter(with_cache(SlowModel(), tmp_path / "rewrites.sqlite"), prompt="tsqr-think-v1", params="greedy")
    body = {"query": {"match": {"text": QUERY}}, "size": 3}
    with RankingServer(CORPUS) as upstream, fusing_proxy(upstream.url, rewriter, budget=0.3) as proxy:
        late = httpx.post(f"{proxy.url}/docs/_search", json=body, timeout=30)
        assert late.headers["X-Tsqr-Rewrite-In-Time"] == "0"
        time.sleep(1.5)  # the abandoned rewrite finishes meanwhile
        cached = httpx.post(f"{proxy.url}/docs/_search", json=body, timeout=30)
        assert cached.headers["X-Tsqr-Rewrite-In-Time"] == "1" and cached.headers["X-Tsqr-Fusion"] == "rrf"
        assert SlowModel.calls == 1


def test_anytime_holds_under_concurrent_searches(tmp_path):
    """20 searches at once with a model slower than the budget: each answers within the budget and
    one local search, though the abandoned rewrites hold the worker threads (waiting for one counts)."""
    import asyncio
    import time

    from tests.test_search_stage import RankingServer

    async def search_all(url: str) -> list[tuple[float, int, str]]:
        async with httpx.AsyncClient(timeout=30) as client:
            async def one():
                started = time.monotonic()
                answer = await client.post(url, json={"query": {"match": {"text": QUERY}}, "size": 3})
                return time.monotonic() - started, answer.status_code, answer.headers.get("X-Tsqr-Rewrite-In-Time")
            return await asyncio.gather(*(one() for _ in range(20)))

    with RankingServer(CORPUS) as upstream, fusing_proxy(upstream.url, slow_rewriter(tmp_path, 2.0), budget=0.3) as proxy:
        answers = asyncio.run(search_all(f"{proxy.url}/docs/_search"))
    assert {(status, in_time) for _, status, in_time in answers} == {(200, "0")}
    assert max(elapsed for elapsed, _, _ in answers) < 0.3 + 1.5
