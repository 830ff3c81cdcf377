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
from tsqr_plugins.testing.conformance import CORPUS, QUERY, REWRITE, FailingBackend, file_rewriter

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
