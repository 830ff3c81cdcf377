"""Generated msearch batches through a fusing client stage on the real nodes (issue 23): each
search of an ``msearch()`` must come back as ``search()`` answers it alone with the same settings
(fused or not, the same page and scores, the same reason when not fused), and a fused one as
the RRF (from the paper's formula) of the node's own rankings of its original body and of each
sample's rewritten body. Each batch draws its samples (1 to 4), which reach the backend as one call.

TSQR_MSEARCH_SEED picks the sequence (printed on failure); each node gets BATCHES batches, or as
many as SECONDS allow.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.test_search_live import live, msearch, python_client, stage  # noqa: F401
from tests.test_stage_samples_live import expected_page
from tsqr_plugins import Rewriter
from tsqr_plugins.testing.conformance import QUERY, SAMPLES, SamplingBackend

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("TSQR_MSEARCH_SEED", "20261205"))
BATCHES = 25
SECONDS = 60  # per node: the generator stops drawing batches past it


def item(rng: random.Random, index: str) -> tuple[dict, dict]:
    """One search of a batch: mostly the query the file rewriter knows (fused), else one it falls
    back on, one that cannot be fused, or one with no text query."""
    shape = rng.choice(["known", "known", "known", "unknown", "sorted", "size0", "match_all", "aggs"])
    text = QUERY if shape != "unknown" else rng.choice(["lamps", "moths at night", "light"])
    body: dict = {"query": {"match": {"text": text}} if shape != "match_all" else {"match_all": {}},
                  "size": rng.randint(1, 5)}
    if rng.random() < 0.5:
        body["from"] = rng.randint(0, 3)
    if shape == "sorted":
        body["sort"] = [{"_doc": "asc"}]
    elif shape == "size0":
        body["size"] = 0
    elif shape == "aggs":
        body["aggs"] = {"lamps": {"filter": {"match": {"text": "lamps"}}}}
    header: dict = {"index": index}
    if rng.random() < 0.3:
        header["preference"] = rng.choice(["_local", "tsqr"])
    return header, body


def comparable(answer: dict) -> dict:
    hits = answer.get("hits", {})
    return {"hits": [(hit["_id"], pytest.approx(hit["_score"]) if hit.get("_score") is not None else None)
                     for hit in hits.get("hits", [])],
            "total": hits.get("total"), "aggregations": answer.get("aggregations")}


def test_each_msearch_search_is_answered_as_search_answers_it(live, tmp_path):
    engine, url, index = live
    client = python_client(engine, url)
    rng = random.Random(f"{SEED}-{engine}")
    started = time.monotonic()
    for batch in range(BATCHES):
        if time.monotonic() - started > SECONDS:
            break
        samples = rng.randint(1, 4)
        backend = SamplingBackend()  # knows QUERY (sample i is SAMPLES[i % 3]); other queries fall back
        options = {"fusion": "rrf", "rewrite_weight": 2.0, "rrf_k": 30, "samples": samples}
        rewriting = stage(engine, client, Rewriter(backend), **options)
        searches = []
        for _ in range(rng.randint(1, 5)):
            searches += item(rng, index)
        context = f"TSQR_MSEARCH_SEED={SEED} engine={engine} batch={batch} samples={samples}: {searches}"
        answer = msearch(engine, rewriting, searches)
        assert len(backend.calls) <= 1 and all(n == samples for _, n in backend.calls), f"{context} {backend.calls}"
        infos = answer.get("tsqr")  # none when no search has a text query (as search() alone)
        assert len(answer["responses"]) == len(infos or answer["responses"]) == len(searches) // 2, context
        for number, (header, body) in enumerate(zip(searches[0::2], searches[1::2])):
            alone = search_alone(engine, rewriting, header, body)
            got, info = answer["responses"][number], (infos or [{}] * len(searches))[number]
            assert comparable(got) == comparable(alone), f"{context} item {number}"
            # search() alone says nothing of a search without a text query; an msearch item says so
            said = alone.get("tsqr") or ({"fused": False, "fusion": {"reason": "no text query to rewrite"}}
                                         if info else {})
            assert info.get("fused") == said.get("fused"), f"{context} item {number}"
            assert info.get("fusion", {}).get("reason") == said.get("fusion", {}).get("reason"), \
                f"{context} item {number}"
            if info.get("fused"):
                texts = [SAMPLES[i % len(SAMPLES)] for i in range(samples)]
                expected = expected_page(engine, client, index, body, texts, 30, (1.0, 2.0))
                assert [(h["_id"]) for h in got["hits"]["hits"]] == [doc_id for doc_id, _ in expected], \
                    f"{context} item {number}"


def search_alone(engine: str, rewriting, header: dict, body: dict) -> dict:
    """The stage's search() of one msearch item, its header's fields as search arguments."""
    if engine == "elasticsearch":
        return rewriting.search(**header, **body)
    return rewriting.search(**header, body=body)
