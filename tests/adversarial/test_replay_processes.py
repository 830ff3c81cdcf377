"""The hostile requests of issue 14, replayed against real `tsqr serve` and `tsqr proxy` processes
(the other tests drive the same code in-process): each gets its documented answer, and both
processes still serve afterwards."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import httpx
import pytest

from tests.conftest import REPO, SAMPLE
from tests.test_serve_process import wait_until_up
from tsqr_plugins.testing.service import free_port

pytest.importorskip("uvicorn", reason="tsqr serve needs the 'serve' extra")
PUBLISHED = json.loads((SAMPLE / "rewrites.json").read_text())
QUERY = next(iter(PUBLISHED))


def spawn(arguments: list[str], health: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "tsqr_plugins.cli", *arguments], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until_up(health, process, 60)
    return process


@pytest.fixture(scope="module")
def serve():
    port = free_port()
    process = spawn(["serve", "--rewriter", "file", "--rewrites", str(SAMPLE / "rewrites.json"), "--port", str(port),
                     "--max-queries-per-request", "8", "--read-timeout", "2"], f"http://127.0.0.1:{port}/health")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.communicate(timeout=30)


SERVE_CASES = [  # (method, path, raw body, status, words in the error message)
    ("POST", "/v1/rewrite", '{"queries": ["q"], "mode": "concat", "repeat": 1000000}', 400, "'repeat' must be an integer from 1 to 20"),
    ("POST", "/v1/rewrite", '{"queries": ["q"], "repeat": true}', 400, "'repeat'"),
    ("POST", "/v1/rewrite", '{"queries": ["q"], "strict": "false"}', 400, "'strict' must be true or false"),
    ("POST", "/v1/rewrite", '{"queries": ["moths \\ud800"]}', 422, "lone surrogate"),
    ("POST", "/v1/rewrite", '{"queries": ["q"], "repeat": 1' + "0" * 5000 + "}", 400, "digits"),
    ("POST", "/v1/rewrite", '{"queries": ' + "[" * 100_000 + "]" * 100_000 + "}", 400, "nested too deeply"),
    ("POST", "/v1/rewrite", '{"queries": ["q"], "params": {"temperature": NaN}}', 400, "NaN"),
    ("POST", "/v1/rewrite", json.dumps({"queries": ["q"] * 9}), 413, "the limit is 8"),
    ("POST", "/v1/rewrite", json.dumps({"queries": ["x" * 40_000]}), 413, "characters"),
    ("POST", "/v1/rewrite", "{not json", 400, "malformed JSON"),
    ("GET", "/v1/nothing-here", "", 404, "no such endpoint"),
    ("GET", "/v1/rewrite", "", 405, "GET is not allowed"),
    ("POST", "/v1/chat/completions", json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}),
     404, "does not exist"),
    ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "q"}], "stream": True}),
     400, "streaming"),
]


@pytest.mark.parametrize("method,path,body,status,words", SERVE_CASES, ids=[f"{c[1]}-{c[3]}-{i}" for i, c in enumerate(SERVE_CASES)])
def test_tsqr_serve_answers_hostile_requests(serve, method, path, body, status, words):
    response = httpx.request(method, serve + path, content=body.encode("utf-8", "surrogatepass"),
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == status, response.text[:300]
    assert words in response.json()["error"]["message"]


def test_tsqr_serve_answers_documented_shapes_after_all_that(serve):
    both = httpx.post(serve + "/v1/rewrite", json={"queries": [QUERY], "mode": "both"}, timeout=30).json()
    assert both["rewrites"][0]["texts"] == [QUERY, PUBLISHED[QUERY]]
    chunked = socket.create_connection(("127.0.0.1", int(serve.rsplit(":", 1)[1])), timeout=15)
    chunked.sendall(b"POST /v1/rewrite HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(80):  # 5 MiB of a chunked body: refused at 4 MiB, as it arrives
        chunked.sendall(b"10000\r\n" + b"x" * 65536 + b"\r\n")
    answer = chunked.recv(4096)
    chunked.close()
    assert answer.startswith(b"HTTP/1.1 413")
    metrics = httpx.get(serve + "/metrics", timeout=30).text
    assert 'status="500"' not in metrics


@pytest.fixture(scope="module")
def proxy():
    from tests.search_server import RecordingSearchServer
    from tsqr_plugins.testing.conformance import CORPUS

    with RecordingSearchServer(CORPUS) as upstream:
        port = free_port()
        process = spawn(["proxy", "--search-node", upstream.url, "--port", str(port), "--field", "text",
                         "--rewriter", f"file:{SAMPLE / 'rewrites.json'}", "--on-missing", "fallback",
                         "--max-body-mb", "2"], f"http://127.0.0.1:{port}/")
        yield f"http://127.0.0.1:{port}", upstream
        process.terminate()
        process.communicate(timeout=30)


def test_tsqr_proxy_passes_hostile_searches_through_and_rewrites_good_ones(proxy):
    url, upstream = proxy
    deep = b'{"query": ' + b'{"bool": {"must": [' * 50_000 + b"{}" + b"]}}" * 50_000 + b"}"
    assert httpx.post(url + "/docs/_search", content=deep, headers={"Content-Type": "application/json"},
                      timeout=60).status_code == 200
    assert upstream.searches()[-1]["raw"] == deep
    assert httpx.post(url + "/docs/_search", content=b"{not json", timeout=30).status_code == 200
    assert upstream.searches()[-1]["raw"] == b"{not json"
    too_big = httpx.post(url + "/docs/_search", content=b" " * (3 * 1024 * 1024), timeout=30)
    assert too_big.status_code == 413
    good = httpx.post(url + "/docs/_search", json={"query": {"match": {"text": QUERY}}}, timeout=30)
    assert good.status_code == 200 and good.headers["X-Tsqr-Rewritten"] == "1"
    assert upstream.searches()[-1]["body"]["query"]["match"]["text"]["query"] == PUBLISHED[QUERY]
