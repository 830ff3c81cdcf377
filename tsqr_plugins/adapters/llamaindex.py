"""TongSearch-QR in LlamaIndex: a ``BaseQueryTransform`` and a retriever wrapper with real async.

    from tsqr_plugins import Rewriter, load_backend
    from tsqr_plugins.adapters.llamaindex import TongSearchQRQueryTransform, TongSearchQRRetriever

    rewriter = Rewriter(load_backend("openai", base_url="http://127.0.0.1:8000/v1"))
    engine = TransformQueryEngine(index.as_query_engine(), TongSearchQRQueryTransform(rewriter))
    retriever = TongSearchQRRetriever(BM25Retriever.from_defaults(nodes=nodes), rewriter)
    nodes = await retriever.aretrieve("why do moths circle lamps?")

The rewrite goes into ``query_str`` (what BM25 and other lexical retrievers read) and into
``custom_embedding_strs`` (what dense retrievers embed). Also importable as
``llama_index.retrievers.tsqr`` once ``integrations/llamaindex`` is installed.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Sequence
from typing import Any

from .. import anytime
from ..combine import DEFAULT_REPEAT, MODES
from ..core import Rewrite, Rewriter, check_samples, fused_samples, join_samples
from ..errors import InputError
from ..fusion import RRF_K, best_first, check_rrf_k, rrf_ranked
from ..lazy import require
from ..prompts import Prompt

require("llama_index.core", "llamaindex", "the LlamaIndex adapter")

from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402
from llama_index.core.indices.query.query_transform.base import BaseQueryTransform  # noqa: E402
from llama_index.core.prompts import PromptTemplate  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, QueryType  # noqa: E402

PROMPT_KEY = "rewrite_prompt"


def _as_bundle(query: QueryType) -> QueryBundle:
    bundle = QueryBundle(query) if isinstance(query, str) else query
    if not isinstance(bundle, QueryBundle):
        raise InputError(f"a query must be a string or a QueryBundle, got {type(query).__name__}")
    return bundle


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"unknown combine mode {mode!r}; choose one of {list(MODES)}")
    return mode


class TongSearchQRQueryTransform(BaseQueryTransform):
    """Rewrites ``query_str`` with TongSearch-QR; use it wherever LlamaIndex takes a query transform.

    A failed rewrite leaves the query as it was unless the rewriter is strict. The rewrites of the
    latest call are in ``last_rewrites``. The user turn of the prompt is exposed as
    ``rewrite_prompt`` (``get_prompts``/``update_prompts``, with ``{query_str}``).

    Args:
        rewriter: Makes the rewrites.
        mode: ``"replace"`` (the paper: the rewrite alone), ``"concat"`` (the original ``repeat``
            times, then the rewrite) or ``"both"`` (``query_str`` is the rewrite; the original is
            embedded too).
        repeat: ``concat`` only: how many times the original goes before the rewrite.
        include_original: Add the original query to ``custom_embedding_strs`` in every mode
            (LlamaIndex averages their embeddings).

    Raises:
        InputError: ``rewriter`` is not a Rewriter, or an unknown ``mode``.
    """

    def __init__(self, rewriter: Rewriter, mode: str = "replace", repeat: int = DEFAULT_REPEAT,
                 include_original: bool = False) -> None:
        super().__init__()
        if not isinstance(rewriter, Rewriter):
            raise InputError(f"rewriter must be a tsqr_plugins.Rewriter, got {type(rewriter).__name__}")
        self.rewriter = rewriter
        self.mode = _check_mode(mode)
        self.repeat = repeat
        self.include_original = include_original
        self.last_rewrites: list[Rewrite] = []

    # -- BaseQueryTransform ------------------------------------------------------------------

    def _run(self, query_bundle: QueryBundle, metadata: dict) -> QueryBundle:
        (bundle,) = self.run_batch([query_bundle])
        if metadata is not None:
            metadata["tsqr_rewrite"] = self.last_rewrites[0]
        return bundle

    def _get_prompts(self) -> dict[str, PromptTemplate]:
        prompt = self.rewriter.prompt
        return {PROMPT_KEY: PromptTemplate(prompt.user_template.replace("{question}", "{query_str}"))}

    def _update_prompts(self, prompts: dict[str, Any]) -> None:
        if PROMPT_KEY not in prompts:
            return
        template = getattr(prompts[PROMPT_KEY], "template", None)
        if not isinstance(template, str) or "{query_str}" not in template:
            raise InputError(f"{PROMPT_KEY} must be a PromptTemplate with a {{query_str}} variable")
        current = self.rewriter.prompt
        user = template.replace("{query_str}", "{question}")
        # A new id keeps cached rewrites of different prompts apart.
        digest = hashlib.sha256(f"{current.system}\0{user}".encode()).hexdigest()[:12]
        prompt = Prompt(f"{current.id}+custom-{digest}", current.system, user, current.think)
        old = self.rewriter
        self.rewriter = Rewriter(old.backend, prompt, old.params, strict=old.strict, timeout=old.timeout)

    # -- batch path --------------------------------------------------------------------------

    def run_batch(self, queries: Sequence[QueryType]) -> list[QueryBundle]:
        """Transforms many queries with one backend call.

        Args:
            queries: Query strings or ``QueryBundle``s.

        Returns:
            The transformed bundles, in order.
        """
        bundles = [_as_bundle(query) for query in queries]
        rewrites = self.rewriter.rewrite_batch([bundle.query_str for bundle in bundles])
        self.last_rewrites = rewrites
        return [self.transformed(bundle, rewrite) for bundle, rewrite in zip(bundles, rewrites)]

    def transformed(self, bundle: QueryBundle, rewrite: Rewrite) -> QueryBundle:
        """The bundle with ``rewrite`` applied (pure; the embedding is dropped, it no longer matches).

        Args:
            bundle: The query as it came.
            rewrite: Its rewrite.
        """
        query_str = rewrite.combined_text(self.mode, self.repeat)
        embedding_strs = [query_str]
        if self.include_original or self.mode == "both":
            embedding_strs.append(rewrite.original)
        return QueryBundle(
            query_str=query_str,
            image_path=bundle.image_path,
            custom_embedding_strs=list(dict.fromkeys(embedding_strs)),
        )


class TongSearchQRRetriever(BaseRetriever):
    """Any LlamaIndex retriever with TongSearch-QR rewriting in front.

    ``aretrieve`` rewrites in a worker thread, so the event loop keeps running while the model
    generates, then awaits the inner retriever's own ``aretrieve``. ``retrieve_batch`` /
    ``aretrieve_batch`` rewrite many queries in one backend call.

    Args:
        retriever: The LlamaIndex retriever that searches.
        rewriter: Makes the rewrites.
        mode: ``"replace"``, ``"concat"``, ``"adaptive"``, or ``"rrf"``: retrieve with the original
            and the rewrite and fuse the two lists by reciprocal rank (``"both"`` does the same).
        rrf_k: ``rrf``: the rank constant (60, as LlamaIndex's ``QueryFusionRetriever``).
        samples: Rewrites per query (``Rewriter.rewrite_samples``, one engine call where the engine
            samples several, as ``QueryFusionRetriever``'s ``num_queries``): ``rrf`` fuses the
            original's list with each sample's that did not fall back (``core.fused_samples``), the
            other modes retrieve with the samples joined (``core.join_samples``). Default 1.
        budget: Anytime rewriting (with ``mode="rrf"``): seconds the rewrite may take. The original
            is retrieved at once; a rewrite within the budget is retrieved and fused, a later one
            is not waited for and the nodes are the original's ranking (scored by the fusion of
            that one list); ``last_anytime`` says which. None: no budget.
        repeat: ``concat`` only: how many times the original goes before the rewrite.
        include_original: Embed the original query too (see :class:`TongSearchQRQueryTransform`).
        **kwargs: ``BaseRetriever``'s own arguments (``callback_manager``, ``verbose``...).

    Raises:
        InputError: ``retriever`` is not a BaseRetriever, ``rewriter`` not a Rewriter, an unknown
            ``mode``, ``samples`` below 1, an ``rrf_k`` that is not a finite number >= 0, or a
            ``budget`` that is not positive or comes without ``mode="rrf"``.
    """

    def __init__(self, retriever: BaseRetriever, rewriter: Rewriter, mode: str = "replace",
                 repeat: int = DEFAULT_REPEAT, include_original: bool = False, rrf_k: float = RRF_K,
                 samples: int = 1, budget: float | None = None, **kwargs: Any) -> None:
        if not isinstance(retriever, BaseRetriever):
            raise InputError(f"retriever must be a LlamaIndex BaseRetriever, got {type(retriever).__name__}")
        self._retriever = retriever
        # rrf, the name every host uses, is this retriever's "both": both texts, two lists, fused
        self.fuse, self.rrf_k = mode in ("both", "rrf"), check_rrf_k(rrf_k)
        self.samples = check_samples(samples)
        self.budget = anytime.check_budget(budget, self.fuse)
        self.last_samples: list[list[Rewrite]] = []  # each query's rewrites, one per sample
        self.last_anytime: anytime.Anytime | None = None  # with a budget: what the latest call did
        self.transform = TongSearchQRQueryTransform(rewriter, "both" if mode == "rrf" else mode, repeat,
                                                    include_original)
        super().__init__(**kwargs)

    @property
    def last_rewrites(self) -> list[Rewrite]:
        """The rewrites of the latest call, originals included."""
        return self.transform.last_rewrites

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {"query_transform": self.transform}

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        (nodes,) = self.retrieve_batch([query_bundle])
        return nodes

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        (nodes,) = await self.aretrieve_batch([query_bundle])
        return nodes

    def retrieve_batch(self, queries: Sequence[QueryType]) -> list[list[NodeWithScore]]:
        """One rewrite call for all queries, then the retrievals (anytime: the originals'
        retrievals while the rewrites are made).

        Args:
            queries: Query strings or ``QueryBundle``s.

        Returns:
            Each query's nodes, in query order.
        """
        originals = [_as_bundle(query) for query in queries]
        if self.budget is not None:
            firsts, rows, self.last_anytime = anytime.search_while_rewriting(
                self._rewrite_call(originals), lambda: [self._retriever.retrieve(o) for o in originals], self.budget)
        else:
            rows = self._rewrite_call(originals)()
            firsts = [self._retriever.retrieve(o) for o in originals] if self.fuse else []
        bundles = self._bundles(originals, rows)
        if not self.fuse:
            return [self._retriever.retrieve(own[0]) for own in bundles]
        return [reciprocal_rank_fusion([first, *(self._retriever.retrieve(b) for b in own)], self.rrf_k)
                for first, own in zip(firsts, bundles)]

    async def aretrieve_batch(self, queries: Sequence[QueryType]) -> list[list[NodeWithScore]]:
        """One rewrite call (in a worker thread) for all queries, then the retrievals concurrently
        (anytime: the originals' retrievals while the rewrites are made).

        Args:
            queries: Query strings or ``QueryBundle``s.

        Returns:
            Each query's nodes, in query order.
        """
        originals = [_as_bundle(query) for query in queries]

        def retrieve_all(bundles):
            return asyncio.gather(*(self._retriever.aretrieve(bundle) for bundle in bundles))

        if self.budget is not None:
            firsts, rows, self.last_anytime = await anytime.asearch_while_rewriting(
                self._rewrite_call(originals), retrieve_all(originals), self.budget)
            bundles = self._bundles(originals, rows)
            seconds = await asyncio.gather(*(retrieve_all(own) for own in bundles))
        else:
            bundles = self._bundles(originals, await asyncio.to_thread(self._rewrite_call(originals)))
            if not self.fuse:
                return list(await retrieve_all([own[0] for own in bundles]))
            firsts, seconds = await asyncio.gather(retrieve_all(originals),
                                                   asyncio.gather(*(retrieve_all(own) for own in bundles)))
        return [reciprocal_rank_fusion([first, *second], self.rrf_k) for first, second in zip(firsts, seconds)]

    def _rewrite_call(self, originals: list[QueryBundle]) -> Any:
        """The one rewriter call for these queries: each query's row of samples."""
        texts = [bundle.query_str for bundle in originals]
        return functools.partial(self.transform.rewriter.rewrite_samples, texts, self.samples)

    def _bundles(self, originals: list[QueryBundle], rows: list[list[Rewrite]] | None) -> list[list[QueryBundle]]:
        """Each query's bundles to retrieve with: fusing, one per sample that did not fall back;
        otherwise one, the samples joined. None (anytime, the rewrites came late): none, their fallbacks kept."""
        late = rows is None
        if late:
            rows = [[r] * self.samples for r in anytime.late(self.transform.rewriter, [b.query_str for b in originals],
                                                              self.budget)]
        self.transform.last_rewrites = [join_samples(row) for row in rows]
        self.last_samples = rows
        if late:
            return [[] for _ in originals]
        if self.fuse:  # each sample that did not fall back (core.fused_samples)
            return [[self.transform.transformed(b, rewrite) for rewrite in fused_samples(row)]
                    for b, row in zip(originals, rows)]
        return [[self.transform.transformed(b, join_samples(row))] for b, row in zip(originals, rows)]


def reciprocal_rank_fusion(rankings: list[list[NodeWithScore]], k: float = RRF_K) -> list[NodeWithScore]:
    """One list from several (:func:`tsqr_plugins.fusion.rrf_ranked`): each node scores
    sum(1 / (k + rank)); equal scores keep the order first seen.

    Args:
        rankings: The retrievers' lists, each best first.
        k: The rank constant (60).

    Returns:
        The fused nodes, best first, each with its fused score.
    """
    nodes: dict[str, Any] = {}
    for ranking in rankings:
        for hit in ranking:
            nodes.setdefault(hit.node.node_id, hit.node)
    fused = rrf_ranked([[hit.node.node_id for hit in ranking] for ranking in rankings], k)
    return [NodeWithScore(node=nodes[node_id], score=fused[node_id]) for node_id in best_first(fused)]
