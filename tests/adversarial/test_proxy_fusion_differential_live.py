"""A seeded generator for `tsqr proxy --fusion rrf` (issue 23) on Elasticsearch 9.2, OpenSearch 2.19
and 3.6: random `_search` requests (from/size, sort, aggregations, query-string parameters,
bodies fusion must leave alone) through a fusing proxy, with and without an anytime budget and
with 1 to 4 samples (`--samples`, drawn per request), each checked against the node itself:

- fused (`X-Tsqr-Fusion: rrf`): the hits equal the RRF (the paper's formula, written in
  test_fusion.py) of the node's own rankings of the caller's body and of each sample's rewritten
  body (built here from the known samples), searched directly with the same query string; total
  and aggregations are the original's;
- rewritten but not fused (`X-Tsqr-Fusion-Skipped`): the answer of a proxy that does not fuse
  (with the same samples, joined);
- not rewritten: the node's own answer to the caller's request.

TSQR_FUSION_SEED picks the sequence (printed on failure); each node gets at most REQUESTS requests
and about SECONDS seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import uuid

import httpx
import pytest

from tests.adversarial.test_proxy_differential_live import comparable
from tests.conftest import engine_url
from tests.test_fusion import reference_rrf
from tsqr_plugins import Rewriter
from tsqr_plugins.testing.conformance import QUERY, REWRITE, SAMPLES, SamplingBackend

pytestmark = pytest.mark.integration
pytest.importorskip("uvicorn", reason="the proxy needs the 'serve' extra")

SEED = int(os.environ.get("TSQR_FUSION_SEED", "20261205"))
REQUESTS = 120
SECONDS = 90.0
WORDS = ["moths", "lamps", "light", "orientation", "night", "insects", "moon", "dorsal", "street", "transverse",
         "circle", "bulbs", "leaves", "response", "catalogue"]


@contextlib.contextmanager
def generated_index(url: str, rng: random.Random):
    """An index of 60 seeded documents over WORDS (enough for pages past the first)."""
    from tsqr_plugins.search.bulk import BulkIndexer

    index = f"wt-proxy-gen-{uuid.uuid4().hex[:8]}"
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(60)]
    indexer = BulkIndexer(url)
    try:
        indexer.create_index(index)
        indexer.index(index, [f"g{i}" for i in range(len(texts))], texts, progress=False)
        yield index
    finally:
        httpx.delete(f"{url}/{index}")
        indexer.close()


# what fusion must leave alone (docs/proxy.md), independently of the proxy's own reasoning
UNFUSABLE_BODY = ("explain", "collapse", "search_after")
FUSABLE_PARAMS = ("routing=r1", "preference=_local", "typed_keys=true", "request_cache=true", "request_cache=false",
                  "rest_total_hits_as_int=true", "pretty", "search_type=dfs_query_then_fetch", "expand_wildcards=open",
                  "ignore_unavailable=true", "allow_no_indices=true", "allow_partial_search_results=true",
                  "error_trace=true", "max_concurrent_shard_requests=3", "pre_filter_shard_size=1", "format=json",
                  "human=true")
OTHER_PARAMS = ("q=moths", "filter_path=hits.hits._id", "size=2", "routing=r1&routing=r2", "track_total_hits=true")


def fusable(body: dict, params: list[str]) -> bool:
    sort = body.get("sort", ["_score"])
    return (body.get("size", 10) > 0 and not any(name in body for name in UNFUSABLE_BODY)
            and all(item in ("_score", {"_score": "desc"}) for item in sort)
            and all(param in FUSABLE_PARAMS for param in params))


def generated_search(rng: random.Random) -> tuple[dict, dict | None, str, bool]:
    """(the caller's body, the body the proxy's rewrite makes of it or None when the rewriter
    does not know the query, the query string, whether it must be fused)."""
    known = rng.random() < 0.75
    words = QUERY if known else " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
    wrap = rng.choice(["match", "bool"])

    def query(match: dict) -> dict:
        if wrap == "match":
            return match
        return {"bool": {"should": [match], "must_not": [{"term": {"text": "zzzz"}}]}}

    body: dict = {"query": query({"match": {"text": words}})}
    rewritten: dict | None = {"query": query({"match": {"text": {"query": REWRITE}}})} if known else None
    for name, value in (("from", rng.choice([0, 1, 3, 7, 12])), ("size", rng.choice([1, 3, 5, 10, 0]))):
        if rng.random() < 0.8:
            body[name] = value
    extra = rng.choice([{}, {}, {}, {"sort": ["_score"]}, {"sort": [{"_score": "desc"}]}, {"sort": [{"id": "asc"}]},
                        {"aggs": {"lamps": {"filter": {"match": {"text": "lamps"}}}}}, {"_source": False},
                        {"track_total_hits": 3}, {"explain": True}, {"collapse": {"field": "id"}},
                        {"search_after": [1.0, "g1"], "sort": ["_score", {"id": "asc"}]}, {"min_score": 0.1}])
    body.update(extra)
    params = rng.sample(FUSABLE_PARAMS + OTHER_PARAMS, rng.choice([0, 0, 1, 2, 3]))
    if "request_cache=true" in params and "request_cache=false" in params:
        params.remove("request_cache=false")  # one parameter given twice is another case
    if rewritten is not None:
        rewritten.update({k: v for k, v in body.items() if k not in ("query", "aggs")})
    return body, rewritten, ("?" + "&".join(params)) if params else "", known and fusable(body, params)


def sample_bodies(rewritten: dict, samples: int) -> list[dict]:
    """Each sample's rewritten body: ``rewritten`` (made with REWRITE, sample 0) with sample i's
    text, as SamplingBackend samples them."""
    written = json.dumps(rewritten)
    return [json.loads(written.replace(json.dumps(REWRITE), json.dumps(SAMPLES[i % len(SAMPLES)])))
            for i in range(samples)]


def node_fusion(client: httpx.Client, url: str, index: str, body: dict, rewrittens: list[dict], query: str):
    """The RRF (the paper's formula) of the node's rankings of the caller's body and of each
    rewritten one (first from + size hits each), cut to the page; ties: id descending."""
    start, depth = body.get("from", 0), body.get("from", 0) + body.get("size", 10)
    rankings = []
    for each in [body, *rewrittens]:
        hits = client.post(f"{url}/{index}/_search{query}", json={**each, "from": 0, "size": depth}).json()["hits"]["hits"]
        rankings.append([hit["_id"] for hit in hits])
    scores = reference_rrf(rankings, 60, [1.0] * len(rankings))
    order = sorted(sorted(scores, reverse=True), key=lambda doc: -round(scores[doc], 12))
    return [(doc_id, scores[doc_id]) for doc_id in order[start:depth]]


@pytest.fixture(scope="module", params=["elasticsearch", "opensearch", "opensearch3"])
def node(request):
    url = engine_url(request.param)
    with generated_index(url, random.Random(f"{SEED}-corpus")) as index:
        yield request.param, url, index


def test_a_fusing_proxy_answers_as_rrf_of_the_nodes_own_searches(node, tmp_path):
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.adapters.stage import StageSettings
    from tsqr_plugins.testing.service import RunningApp

    engine, url, index = node
    rng = random.Random(f"{SEED}-{engine}")
    rewriter = Rewriter(SamplingBackend())  # knows QUERY (sample i: SAMPLES[i % 3]); other queries fall back
    kinds = {"fused": 0, "skipped": 0, "plain": 0}
    ended = time.monotonic() + SECONDS
    with contextlib.ExitStack() as stack, httpx.Client(timeout=30) as client:
        proxies: dict = {}

        def proxy_of(kind: str, samples: int):
            """A running proxy of a kind (fusing, anytime, plain) and sample count, started once."""
            if (kind, samples) not in proxies:
                options = {"fusing": {"fusion": "rrf"}, "anytime": {"fusion": "rrf", "budget": 30.0}, "plain": {}}
                settings = StageSettings(samples=samples, **options[kind])
                app = RunningApp(create_proxy_app(SearchProxy(url, rewriter, settings)))
                proxies[(kind, samples)] = stack.enter_context(app)
            return proxies[(kind, samples)]

        for step in range(REQUESTS):
            if time.monotonic() > ended:
                break
            body, rewritten, query, must_fuse = generated_search(rng)
            # sometimes with an index that does not exist, which ?ignore_unavailable=true lets pass
            target = index if rng.random() < 0.8 else f"{index},wt-proxy-absent"
            kind, samples = rng.choice(["fusing", "anytime"]), rng.randint(1, 4)
            proxy, plain = proxy_of(kind, samples), proxy_of("plain", samples)
            where = (f"seed {SEED} (TSQR_FUSION_SEED), {engine}, step {step}, {kind} with {samples} samples: "
                     f"{query} {json.dumps(body)}")
            proxied = client.post(f"{proxy.url}/{target}/_search{query}", json=body)
            # fused exactly when it must, unless the node refuses the caller's own search (then its
            # answer, e.g. rest_total_hits_as_int with track_total_hits: 3)
            refused = must_fuse and client.post(f"{url}/{target}/_search{query}", json=body).status_code != 200
            assert (proxied.headers.get("X-Tsqr-Fusion") == "rrf") == (must_fuse and not refused), \
                f"{where}\n{proxied.headers}"
            if proxied.headers.get("X-Tsqr-Fusion") == "rrf":
                assert rewritten is not None and proxied.status_code == 200, where
                assert proxied.headers.get("X-Tsqr-Fusion-Samples", "0") == ",".join(map(str, range(samples))), where
                expected = node_fusion(client, url, target, body, sample_bodies(rewritten, samples), query)
                got = [(hit["_id"], hit["_score"]) for hit in proxied.json()["hits"]["hits"]]
                assert [d for d, _ in got] == [d for d, _ in expected], f"{where}\n{got}\n{expected}"
                assert [s for _, s in got] == pytest.approx([s for _, s in expected]), where
                direct = client.post(f"{url}/{target}/_search{query}", json=body).json()
                for part in ("aggregations",):
                    assert proxied.json().get(part) == direct.get(part), where
                assert proxied.json()["hits"]["total"] == direct["hits"]["total"], where
                kinds["fused"] += 1
                continue
            assert proxied.headers.get("X-Tsqr-Fusion-Skipped"), where
            if proxied.headers.get("X-Tsqr-Rewritten", "0") != "0":  # as a proxy that does not fuse
                reference = client.post(f"{plain.url}/{target}/_search{query}", json=body)
                kinds["skipped"] += 1
            else:  # nothing rewritten: the node's own answer
                reference = client.post(f"{url}/{target}/_search{query}", json=body)
                kinds["plain"] += 1
            assert proxied.status_code == reference.status_code, f"{where}\n{proxied.text[:300]}"
            assert comparable(proxied.content) == comparable(reference.content), f"{where}\n{proxied.text[:300]}"
    assert all(kinds.values()), (SEED, kinds)  # every kind of answer was met
