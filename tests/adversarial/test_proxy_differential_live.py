"""The differential proxy test (issue 21): seeded, generated requests sent to a real node directly
and through `tsqr proxy`, on Elasticsearch 9.2, OpenSearch 2.19 and 3.6 (`make test` starts them).
Everything but a rewritten `_search` must come back the same: status, the fields an intermediary
relays, and the body (timings aside). The proxy's own refusals are part of the contract too: a
path with dot segments or a '#' is 400 through the proxy whatever the node would say.

TSQR_DIFFERENTIAL_SEED picks the sequence (printed on failure); each node gets REQUESTS requests.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re

import httpx
import pytest

from tests.conftest import engine_url, indexed_corpus
from tests.test_search_live import comparable_headers
from tsqr_plugins.testing.conformance import CORPUS, QUERY, file_rewriter

pytestmark = pytest.mark.integration
pytest.importorskip("uvicorn", reason="the proxy needs the 'serve' extra")

SEED = int(os.environ.get("TSQR_DIFFERENTIAL_SEED", "20261205"))
REQUESTS = 200

WORDS = ["moths", "lamps", "light", "orientation", "night", "insects", "José", "€", "naïve", "北京", "a\"b", "\\n"]


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))


def search_body(rng: random.Random) -> dict:
    """A _search body of one of the shapes the stage reads, on text it mostly cannot rewrite (the
    file rewriter knows QUERY only: those searches fall back and must go out as they came)."""
    words = QUERY if rng.random() < 0.5 else text(rng)
    shape = rng.choice(["match", "match_long", "multi_match", "bool", "term", "match_all", "query_string",
                        "match_phrase", "combined_fields", "filtered", "not_an_object", "unknown_query"])
    query = {
        "match": {"match": {"text": words}},
        "match_long": {"match": {"text": {"query": words, "operator": rng.choice(["and", "or"]), "boost": 2}}},
        "multi_match": {"multi_match": {"query": words, "fields": ["text", "title^2"]}},
        "bool": {"bool": {"should": [{"match": {"text": words}}], "filter": [{"match": {"text": "moths"}}]}},
        "term": {"term": {"text": rng.choice(WORDS)}},
        "match_all": {"match_all": {}},
        "query_string": {"query_string": {"query": words.replace('"', "")}},
        "match_phrase": {"match_phrase": {"text": words}},
        "combined_fields": {"combined_fields": {"query": words, "fields": ["text"]}},
        "filtered": {"constant_score": {"filter": {"match": {"text": words}}}},
        "not_an_object": words,
        "unknown_query": {"no_such_query": {"text": words}},
    }[shape]
    body: dict = {"query": query, "size": rng.choice([1, 3, 10])}
    if rng.random() < 0.3:
        body["_source"] = rng.choice([False, ["text"]])
    return body


def raw_body(rng: random.Random, document: dict) -> tuple[bytes, dict[str, str]]:
    """The bytes and content fields a client might send for ``document``: plain, with odd but valid
    JSON (duplicate keys, 1e400, NaN), gzip, YAML, or no declared type."""
    encoded = json.dumps(document, ensure_ascii=rng.random() < 0.5).encode()
    kind = rng.choice(["json", "json", "json", "duplicate", "huge_number", "nan", "gzip", "yaml", "no_type", "broken"])
    headers = {"Content-Type": "application/json"}
    if kind == "duplicate":
        encoded = b'{"size": 1, ' + encoded[1:]
    elif kind == "huge_number":
        encoded = encoded[:-1] + b', "min_score": 1e400}'
    elif kind == "nan":
        encoded = encoded[:-1] + b', "min_score": NaN}'
    elif kind == "gzip":
        encoded, headers["Content-Encoding"] = gzip.compress(encoded), "gzip"
    elif kind == "yaml":
        encoded, headers = b"query:\n  match_all: {}\n", {"Content-Type": "application/yaml"}
    elif kind == "no_type":
        headers = {}
    elif kind == "broken":
        encoded = encoded[: len(encoded) // 2]
    return encoded, headers


def generated_request(rng: random.Random, index: str) -> tuple[str, str, bytes | None, dict[str, str]]:
    """(method, path with query string, body, headers): read-only requests, and requests the node
    refuses, so that sending each twice (direct, proxied) leaves the node as it was."""
    kind = rng.choice(["search", "search", "search", "count", "doc", "mapping", "cat", "missing_index",
                       "msearch", "bad_method", "encoded_path", "unknown_endpoint", "explain", "dot_segment"])
    params = rng.choice(["", "", "?pretty", "?filter_path=hits.total", "?error_trace=true", "?no_such_param=1",
                         "?typed_keys=true", "?format=json"])
    headers: dict[str, str] = {}
    body: bytes | None = None
    if kind in ("search", "count", "explain"):
        document = search_body(rng)
        if kind == "count":
            document.pop("size", None)
            document.pop("_source", None)
        body, headers = raw_body(rng, document)
        path = {"search": f"/{index}/_search", "count": f"/{index}/_count", "explain": f"/{index}/_explain/d1"}[kind]
        method = rng.choice(["GET", "POST"])
    elif kind == "doc":
        method, path = rng.choice(["GET", "HEAD"]), f"/{index}/_doc/{rng.choice(list(CORPUS) + ['missing', 'd%201'])}"
    elif kind == "mapping":
        method, path = "GET", f"/{index}/_mapping"
    elif kind == "cat":
        method, path = "GET", f"/_cat/indices/{index}"
        params = rng.choice(["?h=index,docs.count", "?format=json&h=index", "?v&h=index"])
    elif kind == "missing_index":
        method, path = rng.choice(["GET", "DELETE", "HEAD"]), f"/tsqr-no-such-{rng.randint(0, 9)}"
    elif kind == "msearch":
        lines = [json.dumps({"index": index}), json.dumps(search_body(rng))] * rng.randint(1, 3)
        method, path, body = "POST", "/_msearch", ("\n".join(lines) + "\n").encode()
        headers = {"Content-Type": "application/x-ndjson"}
    elif kind == "bad_method":
        method, path = rng.choice(["PATCH", "OPTIONS"]), f"/{index}/_search"
    elif kind == "dot_segment":
        method, path = "GET", rng.choice([f"/{index}/./_search", f"/x/../{index}/_count", f"/{index}/%2e%2e/_mapping",
                                          f"/{index}/_search#frag"])
    elif kind == "encoded_path":
        method, path = "GET", "/" + "".join(f"%{ord(c):02X}" if rng.random() < 0.3 else c for c in index) + "/_count"
    else:
        method, path = "GET", f"/{index}/_no_such_endpoint"
    for name, value in (("X-Opaque-Id", f"t-{rng.randint(0, 99)}"), ("X-User", "José"), ("Accept", "application/json")):
        if rng.random() < 0.3:
            headers[name] = value
    return method, path + params, body, headers


@pytest.fixture(scope="module", params=["elasticsearch", "opensearch", "opensearch3"])
def node(request):
    url = engine_url(request.param)
    with indexed_corpus(url, "tsqr-diff") as index:
        yield request.param, url, index


def send(client: httpx.Client, base: str, method: str, path: str, body: bytes | None, headers: dict[str, str]):
    # the path exactly as generated (httpx would normalise it otherwise)
    url = httpx.URL(base).copy_with(raw_path=path.encode())
    encoded = [(name.encode(), value.encode("latin-1" if name == "X-User" else "ascii")) for name, value in headers.items()]
    return client.request(method, url, content=body, headers=encoded)


def comparable(content: bytes) -> bytes:
    """The body without what differs between two identical requests: timings ("took") and, with
    error_trace, the node's stack traces (netty reaches the handler by different frames each time)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("took", "stack_trace")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    try:
        return json.dumps(strip(json.loads(content))).encode()
    except ValueError:  # YAML answers (a YAML request asks for one) carry the timing too
        return re.sub(rb"(?m)^took: \d+\n", b"", content)


def raw_status(port: int, method: str, path: str) -> int:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        raw.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_the_proxy_answers_as_the_node_does(node, tmp_path):
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.adapters.stage import StageSettings
    from tsqr_plugins.testing.service import RunningApp

    engine, url, index = node
    rng = random.Random(f"{SEED}-{engine}")
    proxy = SearchProxy(url, file_rewriter(tmp_path), StageSettings())
    rewritten = compared = 0
    with RunningApp(create_proxy_app(proxy)) as running, httpx.Client(timeout=30) as client:
        first = client.post(f"{running.url}/{index}/_search", json={"query": {"match": {"text": QUERY}}})
        assert first.status_code == 200 and first.headers["X-Tsqr-Rewritten"] == "1"  # the stage is on
        for step in range(REQUESTS):
            method, path, body, headers = generated_request(rng, index)
            where = f"seed {SEED}, {engine}, step {step}: {method} {path} {headers} {body[:200] if body else body!r}"
            if "#" in path or any(segment in (".", "..") for segment in
                                  (p.replace("%2e", ".") for p in path.split("?")[0].split("/")[1:])):
                # refused by the proxy whatever the node says; sent raw (httpx would resolve the dots)
                assert raw_status(running.port, method, path) == 400, where
                continue
            proxied = send(client, running.url, method, path, body, headers)
            direct = send(client, url, method, path, body, headers)
            if proxied.headers.get("X-Tsqr-Rewritten", "0") != "0":  # another query: the node's verdict on it
                assert proxied.status_code == direct.status_code, f"{where}\n{proxied.text[:300]}\n{direct.text[:300]}"
                rewritten += 1
                continue
            assert proxied.status_code == direct.status_code, f"{where}\n{proxied.text[:300]}\n{direct.text[:300]}"
            # a body whose length changes call to call: timings, stack traces (error_trace), gzip
            timed = (b'"took"' in direct.content or b"took:" in direct.content or "error_trace" in path
                     or "gzip" in direct.headers.get("content-encoding", ""))
            ours = [(k, v) for k, v in comparable_headers(proxied, timed) if not k.startswith("x-tsqr-")]
            assert ours == comparable_headers(direct, timed), where
            assert comparable(proxied.content) == comparable(direct.content), where
            compared += 1
    assert compared > REQUESTS // 2, (rewritten, compared)
