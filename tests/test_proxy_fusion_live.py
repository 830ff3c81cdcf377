"""`tsqr proxy --fusion rrf [--budget]` on real nodes: Elasticsearch 9.2, OpenSearch 2.19 and 3.6
(`make test` starts them; TSQR_ENGINES_REQUIRED=1 makes a missing node a failure). The fused answer
is checked against `tsqr_plugins.fusion.rrf` of the node's own rankings of the two bodies, searched
directly; a search that is not fused against the answer of a proxy that does not fuse.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from tests.conftest import engine_url, indexed_corpus
from tests.test_search_live import without_timings
from tsqr_plugins.testing.conformance import CORPUS, QUERY, RELEVANT, REWRITE, file_rewriter, slow_rewriter

pytestmark = pytest.mark.integration
pytest.importorskip("uvicorn", reason="the proxy needs the 'serve' extra")

REWRITTEN_QUERY = {"match": {"text": {"query": REWRITE}}}  # what mode="replace" makes of QUERY


@pytest.fixture(scope="module", params=["elasticsearch", "opensearch", "opensearch3"])
def live(request):
    """(engine, url, index) with CORPUS indexed through the shipped template's settings."""
    url = engine_url(request.param)
    with indexed_corpus(url, "wt-proxy-fusion") as index:
        yield request.param, url, index


def running(url: str, rewriter, **settings):
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.adapters.stage import StageSettings
    from tsqr_plugins.testing.service import RunningApp

    return RunningApp(create_proxy_app(SearchProxy(url, rewriter, StageSettings(**settings))))


def node_fusion(url: str, index: str, original: dict, rewritten: dict, query: str = "",
                weights=(1.0, 1.0), k: float = 60) -> list[tuple[str, float]]:
    """fusion.rrf of the node's own rankings of the two bodies, each searched directly for its first
    from + size hits (the node's order is the ranking), cut to the page."""
    from tsqr_plugins import fusion

    start = original.get("from", 0)
    depth = start + original.get("size", 10)
    runs = []
    for body in (original, rewritten):
        answer = httpx.post(f"{url}/{index}/_search{query}", json={**body, "from": 0, "size": depth}, timeout=30)
        hits = answer.json()["hits"]["hits"]
        runs.append({hit["_id"]: len(hits) - rank for rank, hit in enumerate(hits)})
    scores = fusion.rrf(runs, k, list(weights), depth)
    return [(doc_id, scores[doc_id]) for doc_id in fusion.ranked(scores)[start:depth]]


def fused(response: httpx.Response) -> list[tuple[str, float]]:
    return [(hit["_id"], hit["_score"]) for hit in response.json()["hits"]["hits"]]


def same(left: list[tuple[str, float]], right: list[tuple[str, float]]) -> bool:
    return [d for d, _ in left] == [d for d, _ in right] and [s for _, s in left] == pytest.approx([s for _, s in right])


@pytest.mark.parametrize("page", [(0, 3), (1, 3), (4, 2), (0, 10)])
def test_the_fused_page_is_rrf_of_the_nodes_own_rankings(live, tmp_path, page):
    engine, url, index = live
    start, size = page
    aggs = {"lamps": {"filter": {"match": {"text": "lamps"}}}}
    body = {"query": {"match": {"text": QUERY}}, "from": start, "size": size, "aggs": aggs}
    query = "?routing=r1&preference=_local&typed_keys=true"
    with running(url, file_rewriter(tmp_path), fusion="rrf", rewrite_weight=2.0, rrf_k=10) as proxy:
        response = httpx.post(f"{proxy.url}/{index}/_search{query}", json=body, timeout=30)
    assert response.status_code == 200 and response.headers["X-Tsqr-Fusion"] == "rrf", response.text[:300]
    expected = node_fusion(url, index, body, {"query": REWRITTEN_QUERY, "from": start, "size": size}, query,
                           (1.0, 2.0), 10)
    assert same(fused(response), expected), (fused(response), expected)
    direct = httpx.post(f"{url}/{index}/_search{query}", json=body, timeout=30).json()
    answer = response.json()
    assert answer["hits"]["total"] == direct["hits"]["total"]
    assert answer["aggregations"] == direct["aggregations"] and "filter#lamps" in answer["aggregations"]  # typed_keys
    if start == 0 and size == 10:
        assert set(d for d, _ in fused(response)) >= RELEVANT  # the rewrite's documents reach the page


UNFUSABLE = [
    ("", {"sort": [{"id": "asc"}]}),
    ("", {"size": 0}),
    ("", {"explain": True, "size": 2}),
    ("", {"search_after": [0.5, "d1"], "sort": ["_score", {"id": "asc"}]}),
    ("?sort=id:asc", {}),
    ("?q=moths", {}),
    ("?filter_path=hits.hits._id", {}),
    ("?track_total_hits=false", {}),
    ("?request_cache=maybe", {}),
]


@pytest.mark.parametrize("query, extra", UNFUSABLE, ids=[f"{q}{list(e)}" for q, e in UNFUSABLE])
def test_an_unfusable_search_answers_as_a_proxy_that_does_not_fuse(live, tmp_path, query, extra):
    engine, url, index = live
    body = {"query": {"match": {"text": QUERY}}, **extra}
    with running(url, file_rewriter(tmp_path), fusion="rrf") as fusing, running(url, file_rewriter(tmp_path)) as plain:
        proxied = httpx.post(f"{fusing.url}/{index}/_search{query}", json=body, timeout=30)
        reference = httpx.post(f"{plain.url}/{index}/_search{query}", json=body, timeout=30)
    assert proxied.headers["X-Tsqr-Fusion-Skipped"] and "X-Tsqr-Fusion" not in proxied.headers
    assert proxied.status_code == reference.status_code
    assert without_timings(proxied.content) == without_timings(reference.content), proxied.text[:300]
    for name in ("X-Tsqr-Rewritten", "X-Tsqr-Fallback"):
        assert proxied.headers.get(name) == reference.headers.get(name)


def test_a_missing_index_is_the_nodes_own_answer(live, tmp_path):
    engine, url, _ = live
    body = {"query": {"match": {"text": QUERY}}}
    missing = f"wt-proxy-missing-{uuid.uuid4().hex[:6]}"
    direct = httpx.post(f"{url}/{missing}/_search", json=body, timeout=30)
    for options in ({}, {"budget": 30.0}):
        with running(url, file_rewriter(tmp_path), fusion="rrf", **options) as proxy:
            proxied = httpx.post(f"{proxy.url}/{missing}/_search", json=body, timeout=30)
        assert proxied.status_code == direct.status_code == 404, options
        assert proxied.json()["error"]["type"] == direct.json()["error"]["type"] == "index_not_found_exception"


def forty_field_index(url: str) -> str:
    """40 text fields f_0..f_39, CORPUS in f_3: a pattern over them passes OpenSearch's clause limit
    with a long rewrite (Elasticsearch 9 sizes its limit from the heap and takes it)."""
    index = f"wt-proxy-fields-{uuid.uuid4().hex[:6]}"
    fields = {f"f_{i}": {"type": "text"} for i in range(40)}
    assert httpx.put(f"{url}/{index}", json={"mappings": {"properties": fields}}).status_code == 200
    for doc_id, text in CORPUS.items():
        httpx.put(f"{url}/{index}/_doc/{doc_id}", params={"refresh": "true"}, json={"f_3": text})
    return index


def test_a_rewritten_item_the_node_refuses_answers_the_originals_page(live, tmp_path):
    """The rewritten search past OpenSearch's clause limit: its _msearch item (anytime: its search)
    is an error; the answer is the original's own page, the rewrite counted as a fallback, never a
    5xx or a fusion with an empty list."""
    from tsqr_plugins import Rewriter
    from tsqr_plugins.backends.file import FileBackend
    from tsqr_plugins.testing.conformance import LONG_REWRITE

    engine, url, _ = live
    index = forty_field_index(url)
    rewrites = tmp_path / "long.json"
    rewrites.write_text(json.dumps({QUERY: LONG_REWRITE}))
    body = {"query": {"multi_match": {"query": QUERY, "fields": ["f_*"]}}, "from": 1, "size": 2}
    try:
        direct = httpx.post(f"{url}/{index}/_search", json=body, timeout=30)
        for options in ({}, {"budget": 30.0}):
            with running(url, Rewriter(FileBackend(rewrites)), fusion="rrf", **options) as proxy:
                proxied = httpx.post(f"{proxy.url}/{index}/_search", json=body, timeout=60)
            assert proxied.status_code == 200, (options, proxied.text[:300])
            if engine == "elasticsearch":
                assert proxied.headers["X-Tsqr-Fusion"] == "rrf", options
                continue
            assert "refused the rewritten search" in proxied.headers["X-Tsqr-Fusion-Skipped"], options
            assert proxied.headers["X-Tsqr-Rewritten"] == "0" and proxied.headers["X-Tsqr-Fallback"] == "1"
            assert fused(proxied) == fused(direct), options
    finally:
        httpx.delete(f"{url}/{index}")


def test_anytime_answers_the_original_within_the_budget_or_the_fusion(live, tmp_path):
    """--budget 0.5 with a rewriter that takes 5 s: the original's hits within the budget plus one
    search, said so; with a fast rewriter, the fusion of both rankings."""
    engine, url, index = live
    body = {"query": {"match": {"text": QUERY}}, "from": 1, "size": 3}
    direct = httpx.post(f"{url}/{index}/_search", json=body, timeout=30)
    with running(url, slow_rewriter(tmp_path, 5.0), fusion="rrf", budget=0.5) as proxy:
        started = time.monotonic()
        late = httpx.post(f"{proxy.url}/{index}/_search", json=body, timeout=30)
        elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 2.0, elapsed  # the budget and one search, not the model's 5 s
    assert late.headers["X-Tsqr-Rewrite-In-Time"] == "0" and "budget" in late.headers["X-Tsqr-Fusion-Skipped"]
    assert fused(late) == fused(direct)
    with running(url, slow_rewriter(tmp_path, 0.0), fusion="rrf", budget=30.0) as proxy:
        fast = httpx.post(f"{proxy.url}/{index}/_search", json=body, timeout=30)
    assert fast.headers["X-Tsqr-Rewrite-In-Time"] == "1" and fast.headers["X-Tsqr-Fusion"] == "rrf"
    assert same(fused(fast), node_fusion(url, index, body, {"query": REWRITTEN_QUERY, "from": 1, "size": 3}))


def test_elasticsearch_py_through_a_fusing_proxy(live, tmp_path):
    """The official clients send their own media types (Elasticsearch's versioned JSON): the
    _msearch goes with its NDJSON twin, and the client takes the fused answer."""
    engine, url, index = live
    with running(url, file_rewriter(tmp_path), fusion="rrf") as proxy:
        if engine == "elasticsearch":
            from elasticsearch import Elasticsearch

            client = Elasticsearch(proxy.url)
            response = client.search(index=index, query={"match": {"text": QUERY}}, size=3)
        else:
            from opensearchpy import OpenSearch

            client = OpenSearch([proxy.url])
            response = client.search(index=index, body={"query": {"match": {"text": QUERY}}, "size": 3})
        meta = getattr(response, "meta", None)
        assert meta is None or meta.headers["X-Tsqr-Fusion"] == "rrf"
        expected = node_fusion(url, index, {"query": {"match": {"text": QUERY}}, "size": 3},
                               {"query": REWRITTEN_QUERY, "size": 3})
        assert [hit["_id"] for hit in response["hits"]["hits"]] == [d for d, _ in expected]
