"""Several rewrites per query (issue 23): sampled in one engine call where the engine can (the
OpenAI protocol's and vLLM's ``n``), each cached under its sample index so that a replay is
exact, the first one being the single rewrite."""

from __future__ import annotations

import pytest

from tests.recording_server import RecordingOpenAIServer
from tsqr_plugins import Rewriter, load_backend
from tsqr_plugins.backends import with_cache
from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.errors import InputError

QUERIES = ["why do moths circle lamps?", "is composting possible indoors?"]


def test_n_samples_are_one_request_per_query_and_replay_exactly(tmp_path):
    with RecordingOpenAIServer() as server:
        backend = with_cache(load_backend("openai", base_url=server.base_url, model="tiny"), tmp_path / "c.sqlite")
        rewriter = Rewriter(backend, params="paper")
        samples = rewriter.rewrite_samples(QUERIES + QUERIES[:1], 3)
        assert len(server.requests) == 2 and {request["n"] for request in server.requests} == {3}
        for query, row in zip(QUERIES, samples):
            assert [r.original for r in row] == [query] * 3
            # ordered by the choices' index although the server sent them last first
            assert [r.text for r in row] == [f"rewrite of {query}"] + [f"rewrite of {query} (sample {i})" for i in (1, 2)]
            assert not any(r.fallback or r.cached for r in row)
        assert samples[2] == samples[0]
        replay = rewriter.rewrite_samples(QUERIES, 3)
        assert len(server.requests) == 2  # every sample from the cache
        assert [[r.text for r in row] for row in replay] == [[r.text for r in row] for row in samples[:2]]
        assert all(r.cached for row in replay for r in row)
        # the first sample is the single rewrite's cache entry
        assert [r.text for r in rewriter.rewrite_batch(QUERIES)] == [row[0].text for row in samples[:2]]
        assert len(server.requests) == 2
        backend.close()


class CountingBackend(Backend):
    """Samples one at a time (the default generate_samples): seed + i for sample i."""

    NAME, model_id = "counting", "counting"

    def __init__(self):
        self.calls = []

    def generate(self, queries, prompt, params):
        self.calls.append((list(queries), params.seed))
        return [Completion(text=f"{query} seed {params.seed}") for query in queries]


def test_one_at_a_time_engines_get_seed_plus_i_and_a_partial_cache_keeps_its_entries(tmp_path):
    from tsqr_plugins.params import GenerationParams

    inner = CountingBackend()
    backend = with_cache(inner, tmp_path / "c.sqlite")
    rewriter = Rewriter(backend, params=GenerationParams(seed=7))
    first = rewriter.rewrite_batch(QUERIES[:1])  # sample 0 only
    samples = rewriter.rewrite_samples(QUERIES[:1], 3)
    assert [r.text for r in samples[0]] == [f"{QUERIES[0]} seed {s}" for s in (7, 8, 9)]
    assert samples[0][0].cached and samples[0][0].text == first[0].text
    assert inner.calls[1:] == [(QUERIES[:1], 7), (QUERIES[:1], 8), (QUERIES[:1], 9)]


def test_a_failing_engine_falls_back_per_sample_and_strict_raises(tmp_path):
    from tsqr_plugins.errors import BackendError

    class Broken(CountingBackend):
        def generate_samples(self, queries, prompt, params, n):
            return [[Completion(text="")] * (n - 1) for _ in queries]  # one sample short

    rows = Rewriter(Broken()).rewrite_samples(QUERIES, 2)
    assert all(r.fallback and r.text == r.original for row in rows for r in row)
    with pytest.raises(BackendError):
        Rewriter(Broken(), strict=True).rewrite_samples(QUERIES, 2)
    with pytest.raises(InputError):
        Rewriter(CountingBackend()).rewrite_samples(QUERIES, 0)


def embedded_ranking(task, folder):
    """``ranking(text)``: the embedded engine's ranking of ``text`` over ``task``'s documents (its
    first query's exclusions), best first, ties by id descending as the fusion orders them."""
    from tsqr_plugins.search import make_retriever

    retriever = make_retriever("embedded", folder, False)
    retriever.index(task.doc_ids, task.documents)

    def ranking(text):
        hits = retriever.search_batch([text], 1000, [task.excluded.get(task.query_ids[0], ())])[0]
        run = {h.doc_id: h.score for h in hits}
        return sorted(sorted(run, reverse=True), key=lambda d: -run[d])

    return ranking


def test_eval_joins_samples_and_fuses_each_samples_list(tmp_path):
    """tsqr eval --samples 3 against a real OpenAI-compatible server: one request per query with
    n=3; replace searches the three texts joined, rrf fuses the original's list with each
    sample's (four lists, the reference fusion of the runs searched directly)."""
    pytest.importorskip("ir_measures")
    import json

    from tests.test_eval import run_eval
    from tests.test_fusion import reference_rrf
    from tsqr_plugins.eval.datasets import load_tasks

    with RecordingOpenAIServer(answer=lambda body: "moths lamps light orientation") as server:
        out = tmp_path / "out"
        assert run_eval("--dataset", "sample", "--rewriter", "openai", "--base-url", server.base_url,
                        "--model", "tiny", "--cache", tmp_path / "c.sqlite", "--samples", "3",
                        "--combine", "replace,rrf", "--output", out) == 0
        assert {request["n"] for request in server.requests} == {3}
        tasks = load_tasks("sample")
        assert len(server.requests) == sum(len(task.queries) for task in tasks)
    document = json.loads((out / "results.json").read_text())
    assert document["samples"] == 3 and list(document["results"]["embedded"]) == ["original", "replace", "rrf"]
    texts = ["moths lamps light orientation"] + [f"moths lamps light orientation (sample {i})" for i in (1, 2)]
    task = tasks[0]
    ranking = embedded_ranking(task, tmp_path / "idx")

    expected = reference_rrf([ranking(task.queries[0])] + [ranking(text) for text in texts], 60, [1.0] * 4)
    fused = {}
    for line in (out / "runs" / f"embedded.rrf.{task.name}.trec").read_text().splitlines():
        _, _, doc, _, score, _ = line.split()
        fused[doc] = float(score)
    assert fused == pytest.approx(expected)
    joined = " ".join(texts)
    replace_run = (out / "runs" / f"embedded.replace.{task.name}.trec").read_text().split()
    assert replace_run[2] == ranking(joined)[0]


def test_join_samples_joins_texts_and_is_a_fallback_only_when_every_sample_fell_back():
    """The one joining of samples (tsqr eval --samples, tsqr serve's n): texts in order, a
    fallen-back sample's text being its query; every sample fallen back: sample 0 itself, its text
    the query once (a fallback's text is its query)."""
    from tsqr_plugins.core import Rewrite, join_samples

    good = [Rewrite("q", "a", cached=True), Rewrite("q", "q", fallback=True, reason="BackendError: x"), Rewrite("q", "b")]
    joined = join_samples(good)
    assert (joined.text, joined.fallback, joined.reason, joined.original) == ("a q b", False, None, "q")
    failed = [Rewrite("q", "q", fallback=True, reason=f"BackendError: {i}") for i in range(3)]
    assert join_samples(failed) is failed[0] and join_samples(good[:1]) is good[0]
    with pytest.raises(InputError):
        join_samples([])


def test_eval_rrf_fuses_only_the_samples_that_did_not_fall_back(tmp_path):
    """tsqr eval --samples 3 --combine rrf where sample 1 of every query comes back empty (it falls
    back): the fused run is the reference fusion of the original's list and samples 0 and 2 only
    (core.fused_samples, as every host fuses), not the original's list searched twice."""
    pytest.importorskip("ir_measures")

    from tests.test_eval import run_eval
    from tests.test_fusion import reference_rrf
    from tsqr_plugins.eval.datasets import load_tasks

    texts = ["moths lamps light orientation", "", "insects navigate by the moon"]
    with RecordingOpenAIServer(answer=lambda body: texts) as server:
        out = tmp_path / "out"
        assert run_eval("--dataset", "sample", "--rewriter", "openai", "--base-url", server.base_url,
                        "--model", "tiny", "--samples", "3", "--no-cache", "--combine", "rrf", "--output", out) == 0
    task = load_tasks("sample")[0]
    ranking = embedded_ranking(task, tmp_path / "idx")

    expected = reference_rrf([ranking(task.queries[0]), ranking(texts[0]), ranking(texts[2])], 60, [1.0] * 3)
    fused = {}
    for line in (out / "runs" / f"embedded.rrf.{task.name}.trec").read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        if qid == task.query_ids[0]:
            fused[doc] = float(score)
    assert fused == pytest.approx(expected)
