"""`tsqr proxy` with hostile bodies and a failing rewrite server: the search still goes out."""

from __future__ import annotations

import httpx
import pytest

from tests.recording_server import RecordingOpenAIServer
from tests.search_server import RecordingSearchServer
from tsqr_plugins import Rewriter
from tsqr_plugins.backends.openai import OpenAIBackend
from tsqr_plugins.testing.conformance import CORPUS, QUERY

pytest.importorskip("uvicorn", reason="tsqr proxy needs the 'serve' extra")

from tests.test_proxy import SEARCH, running_proxy  # noqa: E402


def test_a_body_nested_past_the_parser_goes_through_unchanged(tmp_path):
    from tsqr_plugins.testing.conformance import file_rewriter

    deep = b'{"query": ' + b'{"bool": {"must": [' * 50_000 + b"{}" + b"]}}" * 50_000 + b"}"
    with RecordingSearchServer(CORPUS) as upstream, running_proxy(upstream.url, file_rewriter(tmp_path)) as proxy:
        response = httpx.post(f"{proxy.url}/docs/_search", content=deep, headers={"Content-Type": "application/json"},
                              timeout=60)
        (sent,) = upstream.searches()
    assert response.status_code == 200  # before: 502 "query rewriting failed: maximum recursion depth"
    assert sent["raw"] == deep and "x-tsqr-rewritten" not in response.headers


def test_a_rewrite_server_answering_502_falls_back_at_once(tmp_path):
    with RecordingOpenAIServer(fail_first=100, fail_status=502) as rewrite_server, \
            RecordingSearchServer(CORPUS) as upstream:
        rewriter = Rewriter(OpenAIBackend(rewrite_server.base_url, model="tiny"), timeout=10)
        with running_proxy(upstream.url, rewriter) as proxy:
            response = httpx.post(f"{proxy.url}/docs/_search", json=SEARCH, timeout=60)
        asked = len(rewrite_server.requests)
        (sent,) = upstream.searches()
    assert response.status_code == 200 and response.headers["X-Tsqr-Fallback"] == "1"
    assert sent["body"]["query"]["match"]["text"] == QUERY  # the caller's own query
    assert asked == 1  # before: four requests and 4.3 s of backoff


def test_the_proxy_cli_gives_rewriting_a_time_budget_by_default():
    import argparse

    from tsqr_plugins.cli import proxy as proxy_cli

    parser = argparse.ArgumentParser()
    proxy_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["proxy", "--search-node", "http://127.0.0.1:9200", "--rewriter", "file:x.json"])
    assert args.timeout == 10.0 and args.read_timeout == 10.0
