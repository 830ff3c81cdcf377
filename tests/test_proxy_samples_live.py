"""`tsqr proxy --samples N` on real nodes (Elasticsearch 9.2, OpenSearch 2.19 and 3.6; issue 23): the
samples come from one engine call; with `--fusion rrf` the answer is the RRF (written here from the
paper's formula) of the node's own answers to the caller's body and to each sample's rewritten
body, `X-Tsqr-Fusion-Samples` naming the samples fused; without fusion the joined rewrite is
searched; a replay from the cache is exact.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.test_fusion import reference_rrf
from tests.test_proxy_fusion_live import live, running  # noqa: F401
from tests.test_stage_samples_live import OneSampleFails
from tsqr_plugins import Rewriter
from tsqr_plugins.backends import with_cache
from tsqr_plugins.testing.conformance import QUERY, SAMPLES, FailingBackend, SamplingBackend

pytestmark = pytest.mark.integration
pytest.importorskip("uvicorn", reason="the proxy needs the 'serve' extra")


def rewritten(body: dict, text: str) -> dict:
    return {**body, "query": {"match": {"text": {"query": text}}}}


def expected_page(url: str, index: str, body: dict, texts: list[str], query: str = "", k: float = 60,
                  weights=(1.0, 1.0)) -> list[tuple[str, float]]:
    """The page of the RRF (the paper's formula) of the node's own rankings of ``body`` and of each
    rewrite ``text``, each searched directly for its first from + size hits (ties: id descending)."""
    start, depth = body.get("from", 0), body.get("from", 0) + body.get("size", 10)
    rankings = []
    for each in [body] + [rewritten(body, text) for text in texts]:
        answer = httpx.post(f"{url}/{index}/_search{query}", json={**each, "from": 0, "size": depth}, timeout=30)
        rankings.append([hit["_id"] for hit in answer.json()["hits"]["hits"]])
    scores = reference_rrf(rankings, k, [weights[0]] + [weights[1]] * len(texts))
    order = sorted(sorted(scores, reverse=True), key=lambda doc: -round(scores[doc], 12))
    return [(doc, scores[doc]) for doc in order[start:depth]]


def hits(response: httpx.Response) -> list[tuple[str, float]]:
    return [(hit["_id"], hit["_score"]) for hit in response.json()["hits"]["hits"]]


def assert_page(got, expected, context=""):
    assert [d for d, _ in got] == [d for d, _ in expected], (context, got, expected)
    assert [s for _, s in got] == pytest.approx([s for _, s in expected]), context


@pytest.mark.parametrize("budget", [None, 30.0])
def test_fused_samples_are_the_rrf_of_the_nodes_answers_to_each_text(live, budget):
    engine, url, index = live
    body = {"query": {"match": {"text": QUERY}}, "from": 1, "size": 3,
            "aggs": {"lamps": {"filter": {"match": {"text": "lamps"}}}}}
    query = "?routing=r1&typed_keys=true"
    backend = SamplingBackend()
    with running(url, Rewriter(backend), fusion="rrf", samples=3, rewrite_weight=2.0, rrf_k=10,
                 budget=budget) as proxy:
        response = httpx.post(f"{proxy.url}/{index}/_search{query}", json=body, timeout=30)
    assert response.status_code == 200, response.text[:300]
    assert backend.calls == [([QUERY], 3)]  # the three samples from one engine call
    assert response.headers["X-Tsqr-Fusion"] == "rrf" and response.headers["X-Tsqr-Fusion-Samples"] == "0,1,2"
    assert response.headers["X-Tsqr-Samples"] == "3" and "X-Tsqr-Samples-Fallback" not in response.headers
    if budget is not None:
        assert response.headers["X-Tsqr-Rewrite-In-Time"] == "1"
    assert_page(hits(response), expected_page(url, index, body, SAMPLES, query, 10, (1.0, 2.0)))
    direct = httpx.post(f"{url}/{index}/_search{query}", json=body, timeout=30).json()
    assert response.json()["hits"]["total"] == direct["hits"]["total"]
    assert response.json()["aggregations"] == direct["aggregations"]


def test_a_fallen_back_sample_is_not_searched_and_all_fallen_back_is_the_nodes_answer(live):
    engine, url, index = live
    body = {"query": {"match": {"text": QUERY}}, "size": 4}
    with running(url, Rewriter(OneSampleFails()), fusion="rrf", samples=3) as proxy:
        response = httpx.post(f"{proxy.url}/{index}/_search", json=body, timeout=30)
    assert response.headers["X-Tsqr-Fusion-Samples"] == "0,2" and response.headers["X-Tsqr-Samples-Fallback"] == "1"
    assert_page(hits(response), expected_page(url, index, body, [SAMPLES[0], SAMPLES[2]]))
    with running(url, Rewriter(FailingBackend()), fusion="rrf", samples=3) as proxy:
        response = httpx.post(f"{proxy.url}/{index}/_search", json=body, timeout=30)
    direct = httpx.post(f"{url}/{index}/_search", json=body, timeout=30)
    assert hits(response) == hits(direct) and response.headers["X-Tsqr-Rewritten"] == "0"
    assert response.headers["X-Tsqr-Fusion-Skipped"].startswith("nothing was rewritten")
    assert response.headers["X-Tsqr-Samples-Fallback"] == "0,1,2"


@pytest.mark.parametrize("mode", ["replace", "concat"])
def test_unfused_samples_search_their_texts_joined(live, mode):
    engine, url, index = live
    body = {"query": {"match": {"text": QUERY}}, "size": 5}
    backend = SamplingBackend()
    with running(url, Rewriter(backend), samples=3, mode=mode, repeat=2) as proxy:
        response = httpx.post(f"{proxy.url}/{index}/_search", json=body, timeout=30)
    assert backend.calls == [([QUERY], 3)]
    joined = " ".join(SAMPLES)
    text = joined if mode == "replace" else " ".join([QUERY] * 2 + [joined])
    direct = httpx.post(f"{url}/{index}/_search", json=rewritten(body, text), timeout=30)
    assert hits(response) == hits(direct) and response.headers["X-Tsqr-Samples"] == "3"
    assert response.headers["X-Tsqr-Rewritten"] == "1" and "X-Tsqr-Fusion" not in response.headers


def test_a_replay_from_the_cache_gives_the_same_ranking(live, tmp_path):
    engine, url, index = live
    body = {"query": {"match": {"text": QUERY}}, "size": 4}

    class Unreachable(SamplingBackend):
        def generate_samples(self, queries, prompt, params, n):
            raise ConnectionError("the model is gone: a replay must come from the cache")

    answers = []
    for backend in (SamplingBackend(), Unreachable()):
        rewriter = Rewriter(with_cache(backend, tmp_path / "c.sqlite"))
        with running(url, rewriter, fusion="rrf", samples=3) as proxy:
            answers.append(httpx.post(f"{proxy.url}/{index}/_search", json=body, timeout=30))
        rewriter.backend.close()
    assert [a.headers["X-Tsqr-Fusion-Samples"] for a in answers] == ["0,1,2"] * 2
    assert hits(answers[1]) == hits(answers[0])


def test_cli_samples_are_bounded(tmp_path, capsys):
    from tsqr_plugins.cli import main

    rewrites = tmp_path / "r.json"
    rewrites.write_text(json.dumps({QUERY: SAMPLES[0]}))
    for bad in ("0", "17"):
        code = main(["proxy", "--search-node", "http://127.0.0.1:9", "--rewriter", f"file:{rewrites}", "--no-cache",
                     "--samples", bad])
        assert code == 2 and "--samples must be from 1 to 16" in capsys.readouterr().err


def test_a_rewrite_past_the_budget_still_says_the_samples_all_fell_back(live):
    """--samples 3 with --budget: a rewrite later than the budget answers the original's page, and
    the answer still says X-Tsqr-Samples (3) and that every sample fell back, as the docs promise
    for --samples above 1 (the late path's fields left both out)."""
    import time

    engine, url, index = live

    class Late(SamplingBackend):
        def generate_samples(self, queries, prompt, params, n):
            time.sleep(1.0)
            return super().generate_samples(queries, prompt, params, n)

    body = {"query": {"match": {"text": QUERY}}, "size": 3}
    with running(url, Rewriter(Late()), fusion="rrf", samples=3, budget=0.2) as proxy:
        response = httpx.post(f"{proxy.url}/{index}/_search", json=body, timeout=30)
    assert response.status_code == 200 and response.headers["X-Tsqr-Rewrite-In-Time"] == "0"
    assert response.headers["X-Tsqr-Rewritten"] == "0" and response.headers["X-Tsqr-Fallback"] == "1"
    assert response.headers.get("X-Tsqr-Samples") == "3", dict(response.headers)
    assert response.headers.get("X-Tsqr-Samples-Fallback") == "0,1,2"
    direct = httpx.post(f"{url}/{index}/_search", json=body, timeout=30).json()
    assert [hit["_id"] for hit in response.json()["hits"]["hits"]] == [hit["_id"] for hit in direct["hits"]["hits"]]
