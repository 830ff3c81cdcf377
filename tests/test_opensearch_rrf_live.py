"""The rrf search pipeline (`<name>-rewrite-rrf`) on real nodes: on 3.x with neural-search (which
`engines/engines.py` installs there) its hits are `tsqr_plugins.fusion` of the original match and
the rewritten match searched alone; it falls back to the original when the service fails; on 2.19
(no neural-search on Maven Central for 2.19.6) install leaves it out and says why.

neural-search's RRF (RRFNormalizationTechnique, RRFScoreCombinationTechnique, 3.6.0.0): each
sub-query's hits ranked from 1 in the order the shard returned them, ``1 / (rank_constant + rank)``
rounded to 10 decimals and then to a float, summed with the weights (in float); ties in the fused
score are broken by Lucene's doc id (ScoreCombiner). tsqr's ``fusion.rrf_ranked`` is the same sum
in double precision, with ties in the order first seen: scores are compared to float precision and
the order only between different scores.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from tests.conftest import engine_url, indexed_corpus
from tsqr_plugins.testing.conformance import CORPUS, QUERY, RELEVANT, REWRITE

pytestmark = pytest.mark.integration

UNKNOWN = "Why do street lamps hum at night?"  # the file rewriter has no rewrite for it: a fallback


def search(url: str, index: str, body: dict, pipeline: str | None = None) -> dict:
    params = {"search_pipeline": pipeline} if pipeline else None
    response = httpx.post(f"{url}/{index}/_search", json=body, params=params, timeout=60)
    assert response.status_code == 200, response.text[:500]
    return json.loads(response.content)


def hits(answer: dict) -> list[tuple[str, float]]:
    return [(hit["_id"], hit["_score"]) for hit in answer["hits"]["hits"]]


def fused_by_tsqr(url: str, index: str, options: dict, rewrite: str, size: int, k: int = 60,
                  weights: list[float] | None = None) -> dict[str, float]:
    """``fusion.rrf_ranked`` of the two searches the hybrid query holds, run alone, each to ``size``
    hits (neural-search's depth without ``pagination_depth``: HybridCollectorManager, 3.6.0.0)."""
    from tsqr_plugins.fusion import rrf_ranked
    from tsqr_plugins.querydsl import rewritten_match

    original = search(url, index, {"query": {"match": {"text": options}}, "size": size})
    rewritten = search(url, index, {"query": {"match": {"text": rewritten_match(options, rewrite)}}, "size": size})
    rankings = [[doc_id for doc_id, _ in hits(answer)] for answer in (original, rewritten)]
    assert rankings[0] != rankings[1]  # two different lists, or fusion proves nothing
    return rrf_ranked(rankings, k, weights)


def assert_same_fusion(answer: dict, wanted: dict[str, float], size: int) -> None:
    got = hits(answer)
    best = sorted(wanted.values(), reverse=True)[:size]
    assert [score for _, score in got] == pytest.approx(best, rel=1e-6)
    for doc_id, score in got:
        assert score == pytest.approx(wanted[doc_id], rel=1e-6), (doc_id, got, wanted)
    # where scores differ, the order is the same (equal scores: neural-search orders by doc id)
    order = [doc_id for doc_id, _ in got]
    for a, b in zip(order, order[1:]):
        assert wanted[a] >= wanted[b] - 1e-9


@pytest.fixture(scope="module")
def node3():
    url = engine_url("opensearch3")
    with indexed_corpus(url, "tsqr-rrf") as index:
        yield url, index


@pytest.fixture
def service(tmp_path):
    pytest.importorskip("uvicorn")
    from tsqr_plugins.service import ServiceConfig, create_app
    from tsqr_plugins.testing.service import RunningApp

    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(json.dumps({QUERY: REWRITE}))
    with RunningApp(create_app(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True))) as running:
        yield running


@pytest.fixture
def installer3(node3):
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller

    url, _ = node3
    installer = OpenSearchInstaller(url)
    names: list[str] = []
    try:
        yield installer, names
    finally:
        for name in names:
            installer.uninstall(name, index_template=False)
        installer.close()


def test_the_rrf_pipeline_fuses_the_original_and_the_rewrite_as_tsqr_fusion_does(node3, service, installer3):
    url, index = node3
    installer, names = installer3
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    names.append(name)
    assert installer.neural_search() is not None, "engines/engines.py installs neural-search on the 3.x node"
    installed = installer.install(service.url, name=name, index_template=False)
    assert f"{name}-rewrite-rrf" in installed["search_pipelines"] and "not_installed" not in installed

    options = {"query": QUERY}
    for size in (5, 3):
        answer = search(url, index, {"query": {"match": {"text": options}}, "size": size}, f"{name}-rewrite-rrf")
        assert_same_fusion(answer, fused_by_tsqr(url, index, options, REWRITE, size), size)
    fused = [doc_id for doc_id, _ in hits(answer)]
    plain = [doc_id for doc_id, _ in hits(search(url, index, {"query": {"match": {"text": options}}, "size": 3}))]
    assert RELEVANT & set(fused) and not RELEVANT & set(plain[:1])  # the rewrite's documents come in

    # the short form, and options the rewrite drops (operator) or keeps (boost is not hybrid's own)
    short = search(url, index, {"query": {"match": {"text": QUERY}}, "size": 5}, f"{name}-rewrite-rrf")
    assert hits(short) == hits(search(url, index, {"query": {"match": {"text": options}}, "size": 5},
                                      f"{name}-rewrite-rrf"))
    strict = {"query": QUERY, "operator": "and", "boost": 2.0}
    answer = search(url, index, {"query": {"match": {"text": strict}}, "size": 5}, f"{name}-rewrite-rrf")
    assert_same_fusion(answer, fused_by_tsqr(url, index, strict, REWRITE, 5), 5)

    # a reinstall with another rank constant and weights (neural-search 3.1+) updates the pipeline
    installer.install(service.url, name=name, index_template=False, rrf_k=5, rrf_weights=(3, 1))
    answer = search(url, index, {"query": {"match": {"text": options}}, "size": 5}, f"{name}-rewrite-rrf")
    assert_same_fusion(answer, fused_by_tsqr(url, index, options, REWRITE, 5, k=5, weights=[0.75, 0.25]), 5)


def test_the_rrf_pipeline_searches_the_original_when_there_is_no_rewrite(node3, tmp_path, installer3):
    """The service's own fallback answers the original match alone; a service that is down fails
    the processor, which passes the search on as sent (ignore_failure). Either way a plain match
    reaches the score-ranker processor, which passes it by (RRFProcessor.shouldSkipProcessor): the
    plain search's hits and scores. Other query shapes and other fields run as sent."""
    from tsqr_plugins.service import ServiceConfig, create_app
    from tsqr_plugins.testing.service import RunningApp

    url, index = node3
    installer, names = installer3
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    names.append(name)
    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(json.dumps({QUERY: REWRITE}))
    unknown = {"query": {"match": {"text": {"query": UNKNOWN}}}, "size": 5}
    others = [{"bool": {"should": [{"match": {"text": QUERY}}]}}, {"multi_match": {"query": QUERY, "fields": ["text"]}}]
    with RunningApp(create_app(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True))) as running:
        installer.install(running.url, name=name, index_template=False)
        assert hits(search(url, index, unknown, f"{name}-rewrite-rrf")) == hits(search(url, index, unknown))
        for query in others:
            body = {"query": query, "size": 5}
            assert hits(search(url, index, body, f"{name}-rewrite-rrf")) == hits(search(url, index, body)), query
        # a match on another text field is not the install's field: it runs as sent
        other = f"tsqr-rrf-title-{uuid.uuid4().hex[:6]}"
        mapping = {"mappings": {"properties": {"title": {"type": "text"}, "text": {"type": "text"}}}}
        assert httpx.put(f"{url}/{other}", json=mapping).status_code == 200
        try:
            for doc_id, text in CORPUS.items():
                httpx.put(f"{url}/{other}/_doc/{doc_id}", params={"refresh": "true"}, json={"title": text, "text": text})
            for field, rewritten in (("title", False), ("text", True)):
                body = {"query": {"match": {field: QUERY}}, "size": 5}
                through = hits(search(url, other, body, f"{name}-rewrite-rrf"))
                assert (through != hits(search(url, other, body))) == rewritten, field
        finally:
            httpx.delete(f"{url}/{other}")
    # the service is gone now
    body = {"query": {"match": {"text": {"query": QUERY}}}, "size": 5}
    assert hits(search(url, index, body, f"{name}-rewrite-rrf")) == hits(search(url, index, body))


def test_adaptive_repetition_through_the_native_pipelines(node3, service, installer3):
    """install --mode adaptive: the service answers the original repeated (a third of the
    rewrite's words) then the rewrite, in the write-in-place pipeline and in the rrf pipeline's
    second sub-query alike (combine.combined_text, what the client stages search)."""
    from tsqr_plugins.core import Rewrite

    url, index = node3
    installer, names = installer3
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    names.append(name)
    first = installer.install(service.url, name=name, index_template=False)
    adaptive = installer.install(service.url, name=name, index_template=False, mode="adaptive")
    assert adaptive["connector_id"] != first["connector_id"]  # another body: another connector
    text = Rewrite(original=QUERY, text=REWRITE).combined_text("adaptive", 5)
    assert text.startswith(QUERY) and text.endswith(REWRITE)
    body = {"query": {"match": {"text": {"query": QUERY}}}, "size": 5}
    wanted = search(url, index, {"query": {"match": {"text": {"query": text}}}, "size": 5})
    assert hits(search(url, index, body, f"{name}-rewrite")) == hits(wanted)
    assert_same_fusion(search(url, index, body, f"{name}-rewrite-rrf"),
                       fused_by_tsqr(url, index, {"query": QUERY}, text, 5), 5)


def test_without_neural_search_install_leaves_the_rrf_pipeline_out_and_says_why(service):
    """The 2.19 node: Maven Central serves neural-search 2.19.1.0 but not 2.19.6.0, and a plugin
    must match its node's version, so engines/engines.py installs none there."""
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller

    url = engine_url("opensearch")
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    installer = OpenSearchInstaller(url)
    try:
        assert installer.neural_search() is None
        installed = installer.install(service.url, name=name, index_template=False)
        assert "rrf" not in installed["search_pipelines"]
        assert "neural-search" in installed["not_installed"] and f"{name}-rewrite-rrf" in installed["not_installed"]
        assert httpx.get(f"{url}/_search/pipeline/{name}-rewrite-rrf").status_code == 404
        report = installer.uninstall(name, index_template=False)
        assert not report.kept and f"search pipeline {name}-rewrite" in report.done
    finally:
        installer.uninstall(name, index_template=False)
        installer.close()


def hybrid(query: str, depth: int | None = None) -> dict:
    """The hybrid query a caller may send: the original twice (the pipeline rewrites the second)."""
    body = {"queries": [{"match": {"text": {"query": query}}}, {"match": {"text": {"query": query}}}]}
    return {"hybrid": {**body, **({"pagination_depth": depth} if depth else {})}}


def test_a_hybrid_the_caller_sends_gets_the_rewrite_second_and_pages(node3, tmp_path, installer3):
    """Paging a fused list needs pagination_depth, which a plain match cannot carry: the rewritten
    plain match fails past the first page (neural-search's own message, noticed here if a version
    changes that); the caller's own hybrid pages, and falls back to the original twice."""
    from tsqr_plugins.service import ServiceConfig, create_app
    from tsqr_plugins.testing.service import RunningApp

    url, index = node3
    installer, names = installer3
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    names.append(name)
    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(json.dumps({QUERY: REWRITE}))
    pipeline = f"{name}-rewrite-rrf"
    with RunningApp(create_app(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True))) as running:
        installer.install(running.url, name=name, index_template=False)
        wanted = fused_by_tsqr(url, index, {"query": QUERY}, REWRITE, 5)
        whole = search(url, index, {"query": hybrid(QUERY, 5), "size": 5}, pipeline)
        assert_same_fusion(whole, wanted, 5)
        page = search(url, index, {"query": hybrid(QUERY, 5), "from": 2, "size": 2}, pipeline)
        assert [doc_id for doc_id, _ in hits(page)] == [doc_id for doc_id, _ in hits(whole)[2:4]]
        assert [score for _, score in hits(page)] == pytest.approx([score for _, score in hits(whole)[2:4]])
        paged_match = httpx.post(f"{url}/{index}/_search", params={"search_pipeline": pipeline}, timeout=60,
                                 json={"query": {"match": {"text": QUERY}}, "from": 2, "size": 2})
        assert paged_match.status_code == 400 and "pagination_depth param is missing" in paged_match.text
    # the service is gone: the original twice, fused: the original's order
    plain = [doc_id for doc_id, _ in hits(search(url, index, {"query": {"match": {"text": QUERY}}, "size": 5}))]
    fallback = search(url, index, {"query": hybrid(QUERY, 5), "size": 5}, pipeline)
    assert [doc_id for doc_id, _ in hits(fallback)] == plain


def query_total(url: str, index: str) -> int:
    stats = httpx.get(f"{url}/{index}/_stats/search").json()
    return stats["indices"][index]["total"]["search"]["query_total"]


def test_every_query_shape_runs_once_through_the_rrf_pipeline(node3, service, installer3):
    """Two ml_inference processors, each passing by what it cannot rewrite: every search still
    runs once (ml-commons 2.19.2.0+ answers twice with ignore_missing; see missing_path_flags)."""
    url, index = node3
    installer, names = installer3
    name = f"tsqr-{uuid.uuid4().hex[:6]}"
    names.append(name)
    installer.install(service.url, name=name, index_template=False)
    shapes = [{"bool": {"should": [{"match": {"text": QUERY}}]}}, {"term": {"id": "d2"}}, {"match_all": {}},
              {"match": {"title": QUERY}}, {"match": {"text": QUERY}}, hybrid(QUERY)]
    before = query_total(url, index)
    for query in shapes * 3:
        response = httpx.post(f"{url}/{index}/_search", params={"search_pipeline": f"{name}-rewrite-rrf"},
                              json={"query": query, "size": 3}, timeout=60)
        assert response.status_code == 200, (query, response.text[:300])
        json.loads(response.content)  # raises on a second document spliced in
    for _ in range(20):  # a second run, if any, may land after its answer
        if query_total(url, index) - before > len(shapes) * 3:
            break
        time.sleep(0.1)
    assert query_total(url, index) - before == len(shapes) * 3
