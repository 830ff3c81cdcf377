"""TongSearchQRRewrite on a real Terrier index built by PyTerrier (python-terrier 1.0 / pyterrier
1.x with Terrier's jars from Maven Central). It runs in the environment `make test` builds for it
(.venv-pyterrier); elsewhere it skips, saying so."""

from __future__ import annotations

import json

import pytest

from tsqr_plugins import Rewriter, with_cache
from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.combine import combine_text
from tsqr_plugins.errors import InputError
from tsqr_plugins.lazy import is_installed
from tsqr_plugins.testing import conformance
from tsqr_plugins.testing.conformance import CORPUS, K, QUERY, REWRITE, AdapterConformance, file_rewriter

if not (is_installed("pyterrier") and is_installed("jnius")):
    pytest.skip("python-terrier is not installed (the 'pyterrier' extra; make test runs these tests in "
                ".venv-pyterrier)", allow_module_level=True)

import pandas as pd  # noqa: E402
import pyterrier as pt  # noqa: E402

from tsqr_plugins.adapters.pyterrier import TongSearchQRFusion, TongSearchQRRewrite  # noqa: E402
from tsqr_plugins.fusion import rrf_ranked  # noqa: E402
from tsqr_plugins.search.terrier import build_index  # noqa: E402

# Rewrites a model could write that Terrier's query parser reads as syntax when searched as they are.
SYNTAX_REWRITES = {
    "moon": "Answer: insects orient by the moon",  # a field query: IllegalStateException on this index
    "lamps": "#combine(street lamps) sodium^3 applypipeline:off bulbs",
}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return build_index(tmp_path_factory.mktemp("terrier") / "index", list(CORPUS), list(CORPUS.values()))


@pytest.fixture(scope="module")
def bm25(index):
    return pt.terrier.Retriever(str(index), wmodel="BM25", num_results=K)


def topics(*queries: str) -> pd.DataFrame:
    return pd.DataFrame({"qid": [f"q{i}" for i in range(len(queries))], "query": list(queries)})


def docnos(results: pd.DataFrame) -> list[list[str]]:
    return [list(group.sort_values("rank")["docno"]) for _, group in results.groupby("qid", sort=True)]


class TestConformance(AdapterConformance):
    """``TongSearchQRRewrite(rewriter) >> bm25``, PyTerrier's own composition."""

    @pytest.fixture
    def make_adapter(self, bm25):
        return lambda rewriter: bm25 if rewriter is None else TongSearchQRRewrite(rewriter) >> bm25

    def search(self, adapter, queries):
        return [list(adapter.search(query)["docno"]) for query in queries]

    def search_batch(self, adapter, queries):
        return docnos(adapter(topics(*queries)))

    def last_rewrites(self, adapter):
        return adapter[0].last_rewrites


def test_the_pipeline_ranks_as_pyterrier_searching_the_rewrites_directly(index, tmp_path):
    """The check of issue 23: ``rewrite >> bm25`` gives the ranking (and scores) that PyTerrier's
    BM25 gives a frame holding our rewrites in ``query``, in every mode; the original is kept in
    ``query_0`` as ``pt.model.push_queries`` keeps it."""
    queries = [QUERY, "lamp posts at night", "moths eat leaves"]
    rewrites = {QUERY: REWRITE, "lamp posts at night": "Street lighting: sodium and LED bulbs on lamp posts.",
                "moths eat leaves": "Caterpillars of moths feed on leaves before they pupate."}
    path = tmp_path / "rewrites.json"
    path.write_text(json.dumps(rewrites))
    bm25 = pt.terrier.Retriever(str(index), wmodel="BM25", num_results=5)
    for mode in ("replace", "concat", "adaptive"):
        rewrite = TongSearchQRRewrite(Rewriter(file_backend(path)), mode=mode)
        piped = (rewrite >> bm25)(topics(*queries))
        texts = [combine_text(q, rewrites[q], mode) for q in queries]
        direct = pt.rewrite.tokenise() >> bm25  # PyTerrier's own cleaning of the same texts
        expected = direct(topics(*texts))
        assert docnos(piped) == docnos(expected), mode
        assert list(piped.sort_values(["qid", "rank"])["score"]) == pytest.approx(
            list(expected.sort_values(["qid", "rank"])["score"]), rel=1e-12), mode
        assert set(piped["query_0"]) == set(queries)
        if mode == "replace":  # the retriever tokenises these itself (they hold punctuation): same again
            assert docnos(bm25(topics(*texts))) == docnos(piped)
            assert docnos(piped)[0][:2] != docnos(bm25(topics(*queries)))[0][:2]  # the rewrite changed it


def file_backend(path):
    from tsqr_plugins.backends.file import FileBackend

    return FileBackend(path)


def test_model_output_never_reaches_terriers_query_parser_as_syntax(bm25, tmp_path):
    """A rewrite is a value: ``Answer: ...`` (a field query to Terrier's parser, which throws on an
    index without fields), match operators, weights and ``applypipeline:off`` are searched as words."""
    from jnius import JavaException

    with pytest.raises(JavaException, match="fields"):  # what searching the raw text does
        bm25(topics(SYNTAX_REWRITES["moon"]))
    path = tmp_path / "rewrites.json"
    path.write_text(json.dumps(SYNTAX_REWRITES))
    rewrite = TongSearchQRRewrite(Rewriter(file_backend(path)))
    results = (rewrite >> bm25)(topics(*SYNTAX_REWRITES))
    assert docnos(results)[0][0] == "d1" and "d2" in docnos(results)[1][:2]
    assert list(rewrite(topics(*SYNTAX_REWRITES))["query"]) == [
        "answer insects orient by the moon", "combine street lamps sodium 3 applypipeline off bulbs"]


def test_a_rewrite_of_punctuation_alone_searches_the_original(bm25, tmp_path):
    path = tmp_path / "rewrites.json"
    path.write_text(json.dumps({"street lamps": "?!"}))
    out = TongSearchQRRewrite(Rewriter(file_backend(path)))(topics("street lamps"))
    assert list(out["query"]) == ["street lamps"]


def test_one_backend_call_per_frame_and_the_shared_cache(bm25, tmp_path):
    """A frame of five rows and three distinct queries is one generate() call of three; a second
    rewriter on the same cache file (another tsqr surface) is answered from it with no model."""

    class Counting(Backend):
        NAME, model_id = "counting", "counting"

        def __init__(self):
            self.calls: list[list[str]] = []

        def generate(self, queries, prompt, params):
            self.calls.append(list(queries))
            return [Completion(text=REWRITE if q == QUERY else f"{q} lamps") for q in queries]

    class Unreachable(Counting):
        def generate(self, queries, prompt, params):
            raise ConnectionError("no model here")

    inner = Counting()
    cache = tmp_path / "shared.sqlite"
    rewrite = TongSearchQRRewrite(Rewriter(with_cache(inner, cache)))
    frame = pd.DataFrame({"qid": ["a", "a", "b", "c", "c"], "query": [QUERY, QUERY, "moon", "night", "night"]})
    out = rewrite(frame)
    assert inner.calls == [[QUERY, "moon", "night"]]
    assert list(out["query_0"]) == list(frame["query"]) and len(out) == 5
    first = (rewrite >> bm25)(topics(QUERY))
    # Another surface (tsqr rewrite, the service, the other adapters) on the same file:
    offline = Unreachable()
    again = TongSearchQRRewrite(Rewriter(with_cache(offline, cache), strict=True))
    second = (again >> bm25)(topics(QUERY))
    assert docnos(second) == docnos(first) and all(r.cached for r in again.last_rewrites)


def test_query_columns_are_pushed_as_pyterrier_does_and_reset_restores_them(bm25, tmp_path):
    rewrite = TongSearchQRRewrite(file_rewriter(tmp_path))
    frame = pd.DataFrame({"qid": ["1"], "query": [QUERY], "query_0": ["an earlier formulation"]})
    out = rewrite(frame)
    assert (out.loc[0, "query_1"], out.loc[0, "query_0"]) == ("an earlier formulation", QUERY)
    assert sorted(rewrite.transform_outputs(list(frame.columns))) == sorted(out.columns)
    restored = (rewrite >> pt.rewrite.reset())(frame)
    assert list(restored["query"]) == [QUERY] and list(restored["query_0"]) == ["an earlier formulation"]
    with pytest.raises(InputError, match="'query' column"):
        rewrite(pd.DataFrame({"qid": ["1"], "text": ["x"]}))
    with pytest.raises(InputError, match="unknown combine mode"):
        TongSearchQRRewrite(file_rewriter(tmp_path), mode="fuse")
    with pytest.raises(InputError, match="TongSearchQRFusion"):
        TongSearchQRRewrite(file_rewriter(tmp_path), mode="rrf")
    with pytest.raises(InputError, match="Rewriter"):
        TongSearchQRRewrite("not a rewriter")


def test_rrf_fuses_the_originals_and_the_rewrites_results_with_tsqrs_fusion(index, tmp_path):
    bm25 = pt.terrier.Retriever(str(index), wmodel="BM25", num_results=5)
    original = docnos(bm25(topics(QUERY)))[0]
    rewritten = docnos(bm25(topics(REWRITE)))[0]
    fusion = TongSearchQRFusion(bm25, TongSearchQRRewrite(file_rewriter(tmp_path)), rrf_k=1)
    results = fusion(topics(QUERY, "lamp posts at night"))
    expected = rrf_ranked([original, rewritten], 1)
    first = results[results["qid"] == "q0"].sort_values("rank")
    assert dict(zip(first["docno"], first["score"])) == pytest.approx(expected)
    assert list(first["score"]) == sorted(expected.values(), reverse=True)
    assert list(first["rank"]) == list(range(len(first))) and set(first["query"]) == {QUERY}
    assert "query_0" not in results.columns
    cut = (fusion % 2)(topics(QUERY))
    assert list(cut["docno"]) == list(first["docno"])[:2]
    with pytest.raises(InputError, match="TongSearchQRRewrite"):
        TongSearchQRFusion(bm25, file_rewriter(tmp_path))


def test_samples_are_searched_joined_or_each_fused(index):
    """samples=n: one engine call for n rewrites; the rewrite searches them joined, the fusion fuses
    the original's results with each sample's (the same as rrf_ranked over those lists)."""
    from tsqr_plugins.testing.conformance import SAMPLES, SamplingBackend

    bm25 = pt.terrier.Retriever(str(index), wmodel="BM25", num_results=5)
    backend = SamplingBackend()
    fusion = TongSearchQRFusion(bm25, TongSearchQRRewrite(Rewriter(backend), samples=3))
    results = fusion(topics(QUERY))
    expected = rrf_ranked([docnos(bm25(topics(text)))[0] for text in (QUERY, *SAMPLES)], 60)
    assert dict(zip(results["docno"], results["score"])) == pytest.approx(expected)
    assert backend.calls == [([QUERY], 3)]
    joined = TongSearchQRRewrite(Rewriter(SamplingBackend()), samples=3) >> bm25
    assert docnos(joined(topics(QUERY))) == docnos(bm25(topics(" ".join(SAMPLES))))
    with pytest.raises(InputError, match="samples"):
        TongSearchQRRewrite(Rewriter(SamplingBackend()), samples=0)


def test_the_docs_example_runs(tmp_path):
    """docs/pyterrier.md's block, as written, in a fresh interpreter outside the clone (offline: the
    pinned jars are in PyTerrier's cache); test_readme only compiles it (it needs this extra)."""
    import os
    import re
    import subprocess
    import sys

    from tests.conftest import REPO

    (block,) = re.findall(r"^```python\n(.*?)^```", (REPO / "docs" / "pyterrier.md").read_text(), re.S | re.M)
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TSQR_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tsqr >> bm25" in done.stdout and "d2" in done.stdout
    lines = done.stdout.splitlines()
    assert lines[1].split()[1] == "d2"  # the rewrite finds the dedup answer first


def test_fusion_answers_every_topic_whatever_its_qids_type(index, tmp_path):
    """Integer qids (topics read from a CSV): Terrier answers them as strings, and the fusion still
    finds each topic's results (it answered no rows at all), keeping the caller's qids."""
    bm25 = pt.terrier.Retriever(str(index), wmodel="BM25", num_results=5)
    fusion = TongSearchQRFusion(bm25, TongSearchQRRewrite(file_rewriter(tmp_path)))
    named = fusion(topics(QUERY, "lamp posts at night"))
    numbered = fusion(pd.DataFrame({"qid": [1, 2], "query": [QUERY, "lamp posts at night"]}))
    assert list(numbered["qid"].unique()) == [1, 2]
    assert list(numbered["docno"]) == list(named["docno"]) and list(numbered["score"]) == list(named["score"])


def test_fusion_of_a_repeated_topic_is_its_ranking_once(index, tmp_path):
    """A topic twice in the frame (the same qid and query) is fused once: the scores of one topic, not
    each document counted once per copy. One qid with two different queries, or a topic without a
    qid, is an InputError (the fusion answered them mixed, or dropped the topic)."""
    bm25 = pt.terrier.Retriever(str(index), wmodel="BM25", num_results=5)
    fusion = TongSearchQRFusion(bm25, TongSearchQRRewrite(file_rewriter(tmp_path)))
    once = fusion(topics(QUERY))
    twice = fusion(pd.DataFrame({"qid": ["q0", "q0"], "query": [QUERY, QUERY]}))
    assert list(twice["docno"]) == list(once["docno"]) and list(twice["score"]) == pytest.approx(list(once["score"]))
    with pytest.raises(InputError, match="qid 'q0'"):
        fusion(pd.DataFrame({"qid": ["q0", "q0"], "query": [QUERY, "moon"]}))
    for missing in (None, float("nan")):
        with pytest.raises(InputError, match="qid"):
            fusion(pd.DataFrame({"qid": [missing, "q1"], "query": [QUERY, "moon"]}))


def test_fusion_refuses_bad_topics_and_rrf_k_with_an_input_error(index, tmp_path):
    """Missing columns and queries that are no text are InputErrors naming them, before anything
    reaches Terrier (a JavaException from its tokeniser, a KeyError from pandas); so is an rrf_k that
    is not a number >= 0 (NaN scored every document NaN)."""
    bm25 = pt.terrier.Retriever(str(index), wmodel="BM25", num_results=5)
    fusion = TongSearchQRFusion(bm25, TongSearchQRRewrite(file_rewriter(tmp_path)))
    for frame, message in ((pd.DataFrame({"qid": ["1"]}), "'query' column"),
                           (pd.DataFrame({"query": [QUERY]}), "'qid' column"),
                           (pd.DataFrame({"qid": ["1"], "query": [float("nan")]}), "not a string"),
                           (pd.DataFrame({"qid": ["1"], "query": [None]}), "not a string"),
                           (pd.DataFrame({"qid": ["1"], "query": [42]}), "not a string"),
                           (pd.DataFrame({"qid": ["1"], "query": [["a", "list"]]}), "not a string")):
        with pytest.raises(InputError, match=message):
            fusion(frame)
    with pytest.raises(InputError, match="not a string"):
        TongSearchQRRewrite(file_rewriter(tmp_path))(pd.DataFrame({"qid": ["1"], "query": [["a", "list"]]}))
    for rrf_k in (-1, float("nan"), float("inf"), "60", True):
        with pytest.raises(InputError, match="rrf_k"):
            TongSearchQRFusion(bm25, TongSearchQRRewrite(file_rewriter(tmp_path)), rrf_k=rrf_k)


def test_rrf_fuses_only_the_samples_that_did_not_fall_back(index):
    """A sample that fell back is not retrieved again (core.fused_samples, as every host fuses); a
    topic whose samples all fell back is the original's list alone."""
    from tsqr_plugins.testing.conformance import SAMPLES, OneSampleFails

    bm25 = pt.terrier.Retriever(str(index), wmodel="BM25", num_results=5)
    other = "lamp posts at night"  # SamplingBackend has no samples for it: all fall back
    fusion = TongSearchQRFusion(bm25, TongSearchQRRewrite(Rewriter(OneSampleFails()), samples=3))
    both = pd.DataFrame({"qid": ["q1", "q2"], "query": [QUERY, other]})
    results = fusion(both)
    for qid, texts in (("q1", (QUERY, SAMPLES[0], SAMPLES[2])), ("q2", (other,))):
        expected = rrf_ranked([docnos(bm25(topics(text)))[0] for text in texts], 60)
        mine = results[results["qid"] == qid]
        assert dict(zip(mine["docno"], mine["score"])) == pytest.approx(expected), qid
