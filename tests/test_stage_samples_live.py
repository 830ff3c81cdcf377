"""Several sampled rewrites (``samples=n``, issue 23) in the Elasticsearch/OpenSearch client stages,
on the real nodes (Elasticsearch 9, OpenSearch 2.19 and 3.x; TSQR_ENGINES_REQUIRED=1 makes a missing
node a failure): the samples come from one engine call; fused, the answer is the RRF (written
here from the paper's formula) of the node's own answers to the original and to each sample's
rewritten search; unfused, the joined rewrite is searched; a replay from the cache is exact.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.test_fusion import reference_rrf
from tests.test_search_live import ids, live, python_client, search, stage  # noqa: F401
from tsqr_plugins import Rewriter
from tsqr_plugins.backends import with_cache
from tsqr_plugins.backends.base import Completion
from tsqr_plugins.testing.conformance import QUERY, SAMPLES, FailingBackend, OneSampleFails, SamplingBackend

pytestmark = pytest.mark.integration


def rewritten(body: dict, text: str) -> dict:
    """``body`` with its match query rewritten to ``text``, as the stage builds it."""
    return {**body, "query": {"match": {"text": {"query": text}}}}


def node_ranking(engine, client, index, body: dict, depth: int) -> list[str]:
    """The node's own ranking of ``body``'s first ``depth`` hits, searched alone."""
    return ids(search(engine, client, index, {**body, "from": 0, "size": depth}))


def expected_page(engine, client, index, body: dict, texts: list[str], k: float = 60,
                  weights: tuple[float, float] = (1.0, 1.0)) -> list[tuple[str, float]]:
    """The page of the RRF of the node's rankings of ``body`` and of each rewrite ``text``, from the
    paper's formula (ties: id descending, as ``fusion.ranked``)."""
    start, depth = body.get("from", 0), body.get("from", 0) + body.get("size", 10)
    rankings = [node_ranking(engine, client, index, body, depth)]
    rankings += [node_ranking(engine, client, index, rewritten(body, text), depth) for text in texts]
    scores = reference_rrf(rankings, k, [weights[0]] + [weights[1]] * len(texts))
    order = sorted(sorted(scores, reverse=True), key=lambda doc: -round(scores[doc], 12))
    return [(doc, scores[doc]) for doc in order[start:depth]]


def page(response) -> list[tuple[str, float]]:
    return [(hit["_id"], hit["_score"]) for hit in response["hits"]["hits"]]


def assert_page(got, expected, context=""):
    assert [doc for doc, _ in got] == [doc for doc, _ in expected], context
    assert [score for _, score in got] == pytest.approx([score for _, score in expected]), context


def run_async(engine, url, rewriter, call, **options):
    """``call(stage)`` with the async stage of ``engine``, the client closed afterwards."""
    async def run():
        client = python_client(engine, url, asynchronous=True)
        try:
            return await call(stage(engine, client, rewriter, asynchronous=True, **options))
        finally:
            await client.close()

    return asyncio.run(run())


async def async_search(engine, rewriting, index, body):
    if engine == "elasticsearch":
        return await rewriting.search(index=index, **body)
    return await rewriting.search(index=index, body=body)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_fused_samples_are_the_rrf_of_the_nodes_answers_to_each_text(live, asynchronous):
    engine, url, index = live
    client = python_client(engine, url)
    body = {"query": {"match": {"text": QUERY}}, "from": 1, "size": 3,
            "aggs": {"lamps": {"filter": {"match": {"text": "lamps"}}}}}
    backend = SamplingBackend()
    options = {"fusion": "rrf", "samples": 3, "rewrite_weight": 2.0, "rrf_k": 20}
    if asynchronous:
        response = run_async(engine, url, Rewriter(backend), lambda s: async_search(engine, s, index, body), **options)
    else:
        rewriting = stage(engine, client, Rewriter(backend), **options)
        response = search(engine, rewriting, index, body)
        assert [[r.text for r in row] for row in rewriting.last_samples] == [SAMPLES]
        assert rewriting.last_rewrites[0].text == " ".join(SAMPLES)
    assert backend.calls == [([QUERY], 3)]  # the three samples from one engine call
    assert_page(page(response), expected_page(engine, client, index, body, SAMPLES, 20, (1.0, 2.0)))
    direct = search(engine, client, index, body)
    assert response["hits"]["total"] == direct["hits"]["total"] and response["aggregations"] == direct["aggregations"]
    info = response["tsqr"]
    assert info["fused"] is True and info["samples"] == {"count": 3, "fallback": []}
    assert info["fusion"]["weights"] == [1.0, 2.0, 2.0, 2.0] and info["fusion"]["samples"] == [0, 1, 2]
    assert len(info["fusion"]["hits"]["samples"]) == 3 and len(info["fusion"]["total"]["samples"]) == 3
    assert [s["text"] for s in info["queries"][0]["samples"]] == SAMPLES


def test_a_fallen_back_sample_is_not_searched_and_all_fallen_back_is_one_plain_search(live):
    engine, url, index = live
    client = python_client(engine, url)
    body = {"query": {"match": {"text": QUERY}}, "size": 4}
    rewriting = stage(engine, client, Rewriter(OneSampleFails()), fusion="rrf", samples=3)
    response = search(engine, rewriting, index, body)
    assert_page(page(response), expected_page(engine, client, index, body, [SAMPLES[0], SAMPLES[2]]))
    info = response["tsqr"]
    assert info["samples"] == {"count": 3, "fallback": [1]} and info["fusion"]["samples"] == [0, 2]
    assert info["fusion"]["weights"] == [1.0, 1.0, 1.0]
    assert info["queries"][0]["samples"][1]["fallback"] is True
    failing = stage(engine, client, Rewriter(FailingBackend()), fusion="rrf", samples=3)
    response = search(engine, failing, index, body)
    assert page(response) == page(search(engine, client, index, body))
    assert response["tsqr"]["fused"] is False and response["tsqr"]["fusion"]["reason"].startswith("nothing was rewritten")
    assert response["tsqr"]["samples"]["fallback"] == [0, 1, 2]


@pytest.mark.parametrize("mode", ["replace", "concat"])
def test_unfused_samples_search_their_texts_joined(live, mode):
    engine, url, index = live
    client = python_client(engine, url)
    body = {"query": {"match": {"text": QUERY}}, "size": 5}
    backend = SamplingBackend()
    for asynchronous in (False, True):
        if asynchronous:
            response = run_async(engine, url, Rewriter(backend), lambda s: async_search(engine, s, index, body),
                                 samples=3, mode=mode, repeat=2)
        else:
            response = search(engine, stage(engine, client, Rewriter(backend), samples=3, mode=mode, repeat=2),
                              index, body)
        joined = " ".join(SAMPLES)
        text = joined if mode == "replace" else " ".join([QUERY] * 2 + [joined])
        assert page(response) == page(search(engine, client, index, rewritten(body, text))), (mode, asynchronous)
        assert response["tsqr"]["queries"][0]["rewrite"] == joined
        assert response["tsqr"]["samples"] == {"count": 3, "fallback": []}
    assert backend.calls == [([QUERY], 3)] * 2


def test_a_replay_from_the_cache_gives_the_same_texts_and_ranking(live, tmp_path):
    engine, url, index = live
    client = python_client(engine, url)
    body = {"query": {"match": {"text": QUERY}}, "size": 4}

    class Unreachable(SamplingBackend):
        def generate_samples(self, queries, prompt, params, n):
            raise ConnectionError("the model is gone: a replay must come from the cache")

    first = stage(engine, client, Rewriter(with_cache(SamplingBackend(), tmp_path / "c.sqlite")),
                  fusion="rrf", samples=3)
    answer = search(engine, first, index, body)
    replay = stage(engine, client, Rewriter(with_cache(Unreachable(), tmp_path / "c.sqlite")),
                   fusion="rrf", samples=3)
    again = search(engine, replay, index, body)
    assert [[r.text for r in row] for row in replay.last_samples] == [[r.text for r in row] for row in first.last_samples]
    assert all(r.cached for row in replay.last_samples for r in row)
    assert page(again) == page(answer) and again["tsqr"]["fused"] is True


@pytest.mark.parametrize("asynchronous", [False, True])
def test_msearch_fuses_each_search_with_its_samples_in_one_msearch(live, asynchronous):
    engine, url, index = live
    client = python_client(engine, url)
    fused_body = {"query": {"match": {"text": QUERY}}, "from": 1, "size": 3}
    sorted_body = {"query": {"match": {"text": QUERY}}, "sort": [{"_doc": "asc"}], "size": 2}
    other_body = {"query": {"match": {"text": "lamps"}}, "size": 2}  # SamplingBackend fails: falls back
    searches = [{"index": index}, fused_body, {"index": index}, sorted_body, {"index": index}, other_body]
    backend = SamplingBackend()
    options = {"fusion": "rrf", "samples": 3, "rewrite_weight": 2.0}

    async def call(rewriting):
        if engine == "elasticsearch":
            return await rewriting.msearch(searches=searches)
        return await rewriting.msearch(body=searches)

    if asynchronous:
        response = run_async(engine, url, Rewriter(backend), call, **options)
    else:
        rewriting = stage(engine, client, Rewriter(backend), **options)
        response = rewriting.msearch(searches=searches) if engine == "elasticsearch" else rewriting.msearch(body=searches)
    assert backend.calls == [([QUERY, "lamps"], 3)]
    answers, infos = response["responses"], response["tsqr"]
    assert_page(page(answers[0]), expected_page(engine, client, index, fused_body, SAMPLES, 60, (1.0, 2.0)))
    assert infos[0]["fused"] is True and infos[0]["fusion"]["samples"] == [0, 1, 2]
    assert infos[1]["fused"] is False and "sorted" in infos[1]["fusion"]["reason"]
    assert ids(answers[1]) == ids(search(engine, client, index, rewritten(sorted_body, " ".join(SAMPLES))))
    assert infos[2]["fused"] is False and infos[2]["fallback"] == 1 and infos[2]["samples"]["fallback"] == [0, 1, 2]
    assert ids(answers[2]) == ids(search(engine, client, index, other_body))


@pytest.mark.parametrize("asynchronous", [False, True])
def test_anytime_waits_for_all_samples_within_the_budget(live, asynchronous):
    engine, url, index = live
    client = python_client(engine, url)
    body = {"query": {"match": {"text": QUERY}}, "size": 3}
    backend = SamplingBackend()
    options = {"fusion": "rrf", "samples": 3, "budget": 30.0}
    if asynchronous:
        response = run_async(engine, url, Rewriter(backend), lambda s: async_search(engine, s, index, body), **options)
    else:
        response = search(engine, stage(engine, client, Rewriter(backend), **options), index, body)
    assert backend.calls == [([QUERY], 3)]
    assert_page(page(response), expected_page(engine, client, index, body, SAMPLES))
    anytime = response["tsqr"]["anytime"]
    assert anytime["rewrite_in_time"] is True and anytime["samples"] == 3 and response["tsqr"]["fused"] is True


class PerQuerySamples(SamplingBackend):
    """Sample ``i`` of any query ``q`` is ``"q sample i"``: each call's samples are its own."""

    def generate_samples(self, queries, prompt, params, n):
        self.calls.append((list(queries), n))
        return [[Completion(text=f"{query} sample {i}") for i in range(n)] for query in queries]


class Gate:
    """The engine client, but the ``_msearch`` holding ``held`` waits until another ``_msearch``
    has gone out: the other call has set its samples on the stage by then."""

    def __init__(self, client, held: str, asynchronous: bool):
        import threading

        self.client, self.held, self.asynchronous = client, held, asynchronous
        self.other = asyncio.Event() if asynchronous else threading.Event()

    def __getattr__(self, name):
        return getattr(self.client, name)

    def _is_held(self, kwargs) -> bool:
        return self.held in str(kwargs.get("searches") or kwargs.get("body"))

    def msearch(self, **kwargs):
        if self.asynchronous:
            return self._amsearch(**kwargs)
        if self._is_held(kwargs):
            assert self.other.wait(30)
        else:
            self.other.set()
        return self.client.msearch(**kwargs)

    async def _amsearch(self, **kwargs):
        if self._is_held(kwargs):
            await asyncio.wait_for(self.other.wait(), 30)
        else:
            self.other.set()
        return await self.client.msearch(**kwargs)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_concurrent_msearch_calls_on_one_stage_each_get_their_own_samples(live, asynchronous):
    """Two fused msearch() calls on one stage at once (threads, or asyncio tasks): each answer's
    metadata holds its own call's samples, whatever the other call left in ``last_samples``.
    (Each call's metadata was built from ``last_samples`` after its _msearch came back.)"""
    engine, url, index = live
    texts = {"held": ["moths"], "other": ["lamps", "leaves", "moon"]}

    def searches(words):
        items = []
        for word in words:
            items += [{"index": index}, {"query": {"match": {"text": word}}, "size": 3}]
        return items

    def kwargs(words):
        return {"searches": searches(words)} if engine == "elasticsearch" else {"body": searches(words)}

    def samples_of(response):
        return [[s["text"] for s in q["samples"]] for info in response["tsqr"] for q in info["queries"]]

    options = {"fusion": "rrf", "samples": 2}
    if asynchronous:
        async def both(rewriting):
            rewriting.client = Gate(rewriting.client, "moths", True)
            return await asyncio.gather(rewriting.msearch(**kwargs(texts["held"])),
                                        rewriting.msearch(**kwargs(texts["other"])))

        answers = run_async(engine, url, Rewriter(PerQuerySamples()), both, **options)
    else:
        from concurrent.futures import ThreadPoolExecutor

        rewriting = stage(engine, python_client(engine, url), Rewriter(PerQuerySamples()), **options)
        rewriting.client = Gate(rewriting.client, "moths", False)
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(rewriting.msearch, **kwargs(texts[name])) for name in ("held", "other")]
            answers = [future.result(timeout=60) for future in futures]
    for response, name in zip(answers, ("held", "other")):
        assert all(info["fused"] is True for info in response["tsqr"])
        assert samples_of(response) == [[f"{word} sample {i}" for i in range(2)] for word in texts[name]], name


def test_an_msearch_item_given_as_ndjson_text_is_said_to_be_so_not_to_have_no_text_query(live):
    """An msearch() item written as NDJSON text goes out as written (the stage does not parse it):
    its metadata says so, not that it holds no text query (it does: the stage did not read it)."""
    import json

    engine, url, index = live
    body = {"query": {"match": {"text": QUERY}}, "size": 3}
    searches = [{"index": index}, body, json.dumps({"index": index}), json.dumps(body)]
    rewriting = stage(engine, python_client(engine, url), Rewriter(SamplingBackend()), fusion="rrf", samples=2)
    response = rewriting.msearch(searches=searches) if engine == "elasticsearch" else rewriting.msearch(body=searches)
    first, second = response["tsqr"]
    assert first["fused"] is True
    assert second["fused"] is False and "NDJSON" in second["fusion"]["reason"], second
    assert ids(response["responses"][1]) == ids(search(engine, python_client(engine, url), index, body))


class LateSamples(SamplingBackend):
    """Samples that come a second late (past a budget of 0.2 s)."""

    def generate_samples(self, queries, prompt, params, n):
        import time

        time.sleep(1.0)
        return super().generate_samples(queries, prompt, params, n)


@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize("how", ["error", "late", "late-msearch", "unfused-error"])
def test_a_whole_fallback_still_says_the_samples_all_fell_back(live, asynchronous, how):
    """With samples=3, a rewriter that fails or is later than the budget leaves the caller's search as
    written, and the metadata still has ``samples``, every one fallen back (as the proxy's headers)."""
    engine, url, index = live
    body = {"query": {"match": {"text": QUERY}}, "size": 3}
    options = {"samples": 3}
    if how != "unfused-error":
        options["fusion"] = "rrf"
    if how.startswith("late"):
        backend, options["budget"] = LateSamples(), 0.2
    else:
        backend = FailingBackend()

    batch = {"searches" if engine == "elasticsearch" else "body": [{"index": index}, body]}

    async def call_async(rewriting):
        if how == "late-msearch":
            return {"tsqr": (await rewriting.msearch(**batch))["tsqr"][0]}  # msearch: a list, one per search
        return await async_search(engine, rewriting, index, body)

    if asynchronous:
        response = run_async(engine, url, Rewriter(backend), call_async, **options)
    else:
        rewriting = stage(engine, python_client(engine, url), Rewriter(backend), **options)
        response = ({"tsqr": rewriting.msearch(**batch)["tsqr"][0]} if how == "late-msearch"
                    else search(engine, rewriting, index, body))
    assert response["tsqr"]["fallback"] == 1 and response["tsqr"]["rewritten"] == 0
    assert response["tsqr"]["samples"] == {"count": 3, "fallback": [0, 1, 2]}, response["tsqr"]


def test_a_search_past_the_clause_limit_says_every_sample_fell_back(live, tmp_path):
    """samples=3 without fusion on a field pattern of 40 fields: OpenSearch refuses the joined
    rewrite for its clause count (Elasticsearch takes it), the caller's search goes out as written,
    and the metadata says the three samples were not used."""
    import json

    import httpx

    from tests.test_search_live import forty_field_index
    from tsqr_plugins.backends.file import FileBackend
    from tsqr_plugins.testing.conformance import LONG_REWRITE

    engine, url, _ = live
    index = forty_field_index(url)
    rewrites = tmp_path / "long.json"
    rewrites.write_text(json.dumps({QUERY: LONG_REWRITE}))
    body = {"query": {"multi_match": {"query": QUERY, "fields": ["f_*"]}}, "size": 3}
    client = python_client(engine, url)
    try:
        answer = search(engine, stage(engine, client, Rewriter(FileBackend(rewrites)), samples=3), index, body)
        if engine == "elasticsearch":
            assert answer["tsqr"]["rewritten"] == 1 and answer["tsqr"]["samples"]["fallback"] == []
        else:
            assert answer["tsqr"]["fallback"] == 1 and "clause limit" in answer["tsqr"]["error"]
            assert answer["tsqr"]["samples"] == {"count": 3, "fallback": [0, 1, 2]}
            assert ids(answer) == ids(search(engine, client, index, body))
    finally:
        httpx.delete(f"{url}/{index}")
