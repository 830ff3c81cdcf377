"""`RewritingSearcher`: pyserini's ``LuceneSearcher`` surface with TongSearch-QR rewriting in front.

    from tsqr_plugins import Rewriter, load_backend
    from tsqr_plugins.adapters.pyserini import RewritingSearcher

    searcher = RewritingSearcher("indexes/my-index", Rewriter(load_backend("openai")))
    hits = searcher.search("why do moths circle lamps?", k=10)
    results = searcher.batch_search(queries, qids, k=100, threads=4)

Scoring defaults to BRIGHT/TongSearch's query-side BM25 ("BM25Q"), as ``tsqr eval`` scores:
the searching is ``search.pyserini_searcher.BM25QSearcher`` (where the pyserini versions are told
apart); this adapter rewrites in front of it. ``scoring="bm25"`` gives plain bag-of-words BM25.
The JVM starts on first use, never on import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .. import bm25q
from ..combine import MODES
from ..core import Rewrite, Rewriter, check_samples, fused_samples, join_samples
from ..errors import InputError
from .. import anytime
from ..fusion import RRF_K, best_first, check_rrf_k, rrf_ranked
from ..search.pyserini_searcher import SCORINGS, BM25QSearcher

__all__ = ["FusedHit", "RewritingSearcher", "SCORINGS"]


class RewritingSearcher(BM25QSearcher):
    """``search`` / ``batch_search`` / ``doc`` / ``set_bm25`` of ``LuceneSearcher``, rewriting first.

    The rewrites of the latest call are kept in ``last_rewrites`` (query id, or the query text for
    ``search``, -> ``Rewrite``, original included). Other ``LuceneSearcher`` attributes pass through.

    Args:
        searcher: A Lucene index folder or an existing pyserini ``LuceneSearcher``.
        rewriter: Makes the rewrites; None searches with the queries as given.
        mode: ``"replace"``, ``"concat"`` or ``"adaptive"`` (``"both"`` searches the rewrite: one text
            per query), or ``"rrf"``: search the original and the rewrite and fuse the two hit lists
            by reciprocal rank (hits are then :class:`FusedHit`, scored by the fusion).
        rrf_k: ``rrf``: the rank constant (60).
        samples: Rewrites per query (``Rewriter.rewrite_samples``: one engine call where the
            engine samples several); ``rrf`` fuses the original's list with each sample's that did
            not fall back (``core.fused_samples``), the other modes search the samples' texts joined
            (``core.join_samples``). Default 1.
        budget: Anytime rewriting (with ``mode="rrf"``): seconds the rewrite may take. The original
            is searched at once; a rewrite within the budget is searched and fused, a later one is
            not waited for and the hits are the original's ranking (as :class:`FusedHit`, scored
            by the fusion of that one list); ``last_anytime`` says which. None: no budget.
        repeat: ``concat`` only: how many times the original goes before the rewrite.
        scoring: ``"bm25q"`` (BRIGHT/TongSearch's query-side BM25, as ``tsqr eval``) or ``"bm25"``.
        k1: BM25's k1 (0.9, as BRIGHT).
        b: BM25's b (0.4, as BRIGHT).
        field: The index field searched (pyserini's ``contents``).
        native: Use Anserini's own query-side BM25 generator (pyserini >= 1.0, ``field="contents"``);
            None: when available; False: BRIGHT's exact weights, built here.

    Raises:
        MissingDependencyError: pyserini (the ``pyserini`` extra) is not installed.
        InputError: No index at the path, an unknown ``scoring``, or ``native=True`` where it is
            not available, ``samples`` below 1, an ``rrf_k`` that is not a finite number >= 0, or a
            ``budget`` that is not positive or comes without ``mode="rrf"``.
    """

    def __init__(self, searcher: Any, rewriter: Rewriter | None, mode: str = "replace", repeat: int = 5,
                 scoring: str = "bm25q", k1: float = bm25q.K1, b: float = bm25q.B, field: str = "contents",
                 native: bool | None = None, rrf_k: float = RRF_K, samples: int = 1,
                 budget: float | None = None):
        if mode not in (*MODES, "rrf"):
            raise InputError(f"unknown mode {mode!r}; choose one of {[*MODES, 'rrf']}")
        self.samples = check_samples(samples)
        self.budget = anytime.check_budget(budget, mode == "rrf")
        super().__init__(searcher, scoring, k1, b, field, native)
        self.rewriter = rewriter
        self.mode, self.repeat, self.rrf_k = mode, repeat, check_rrf_k(rrf_k)
        self.last_rewrites: dict[str, Rewrite] = {}  # several samples: joined (core.join_samples)
        self.last_samples: dict[str, list[Rewrite]] = {}
        self.last_anytime: anytime.Anytime | None = None  # with a budget: what the latest call did

    def search(self, q: str, k: int = 10, **kwargs):
        """The top ``k`` hits of ``q``'s rewrite (combined by ``mode``; ``rrf``: fused).

        Args:
            q: The query text, non-empty.
            k: Hits to return.
            **kwargs: Further ``LuceneSearcher.search`` arguments (see :class:`BM25QSearcher`).
        """
        lucene = super()  # the plain search, also from the expressions below
        if self.fusing and self.budget is not None:
            original, texts = self._while_rewriting([q], [q], lambda: lucene.search(q, k, **kwargs))
            return self._fused([original, *(lucene.search(t, k, **kwargs) for t in (texts or [[]])[0])], k)
        (texts,) = self._rewrite([q], [q])
        if self.fusing:
            return self._fused([lucene.search(q, k, **kwargs), *(lucene.search(t, k, **kwargs) for t in texts)], k)
        return lucene.search(texts[0], k, **kwargs)

    def batch_search(self, queries: Sequence[str], qids: Sequence[str], k: int = 10, threads: int = 1,
                     **kwargs) -> dict[str, list]:
        """Rewrites the whole batch in one backend call, then searches.

        Args:
            queries: The query texts.
            qids: Their ids, one per query.
            k: Hits per query.
            threads: Pyserini's search threads.
            **kwargs: Further ``LuceneSearcher.batch_search`` arguments (see :class:`BM25QSearcher`).

        Returns:
            ``{query id: hits}``.

        Raises:
            InputError: ``queries`` and ``qids`` differ in length, or a query is empty.
        """
        if len(queries) != len(qids):
            raise InputError(f"{len(queries)} queries but {len(qids)} query ids")
        keys, lucene = [str(q) for q in qids], super()
        if self.fusing and self.budget is not None:
            originals, texts = self._while_rewriting(
                list(queries), keys, lambda: lucene.batch_search(list(queries), qids, k, threads, **kwargs))
        else:
            texts = self._rewrite(list(queries), keys)
            if not self.fusing:
                return lucene.batch_search([row[0] for row in texts], qids, k, threads, **kwargs)
            originals = lucene.batch_search(list(queries), qids, k, threads, **kwargs)
        lists = [self._search_column(column, k, threads, **kwargs) for column in self._columns(list(qids), texts)]
        return {qid: self._fused([originals[qid], *(hits.get(qid, []) for hits in lists)], k) for qid in originals}

    @staticmethod
    def _columns(qids: list, texts: list[list[str]] | None) -> list[list[tuple[Any, str]]]:
        """The ``i``-th text to fuse of every query that has one, as ``(query id, text)`` pairs: one
        batch per column (queries whose samples fell back have fewer texts; None: late, none)."""
        width = max((len(row) for row in texts or []), default=0)
        return [[(qid, row[i]) for qid, row in zip(qids, texts) if i < len(row)] for i in range(width)]

    def _search_column(self, column: list[tuple[Any, str]], k: int, threads: int, **kwargs: Any) -> dict[str, list]:
        return super().batch_search([text for _, text in column], [qid for qid, _ in column], k, threads, **kwargs)

    @property
    def fusing(self) -> bool:
        """Whether searches fuse two lists (``mode="rrf"`` with a rewriter)."""
        return self.mode == "rrf" and self.rewriter is not None

    def _fused(self, lists: list[list], k: int) -> list[FusedHit]:
        """The lists fused by reciprocal rank (the original's first: its hit is kept for a docid)."""
        hits: dict[str, Any] = {}
        for hit in (hit for ranking in lists for hit in ranking):
            hits.setdefault(hit.docid, hit)
        fused = rrf_ranked([[hit.docid for hit in ranking] for ranking in lists], self.rrf_k)
        return [FusedHit(docid, fused[docid], hits[docid]) for docid in best_first(fused)[:k]]

    def _while_rewriting(self, queries: list[str], keys: list[str], search: Any) -> tuple[Any, list | None]:
        """Anytime: ``search()`` (the originals) while the rewrites are made within the budget; the
        texts to search (see :meth:`_texts`), or None when they came late (their fallbacks then
        in ``last_rewrites``)."""
        self._check(queries)
        first, rows, self.last_anytime = anytime.search_while_rewriting(
            lambda: self._rows(queries), search, self.budget)
        if rows is None:
            self._texts(keys, [[rewrite] * self.samples for rewrite in anytime.late(self.rewriter, queries, self.budget)])
            return first, None
        return first, self._texts(keys, rows)

    @staticmethod
    def _check(queries: list[str]) -> None:
        for query in queries:
            if not isinstance(query, str) or not query.strip():
                raise InputError(f"a query must be a non-empty string, got {query!r}")

    def _rewrite(self, queries: list[str], keys: list[str]) -> list[list[str]]:
        self._check(queries)
        if self.rewriter is None:
            self.last_rewrites, self.last_samples = {}, {}
            return [[query] for query in queries]
        return self._texts(keys, self._rows(queries))

    def _rows(self, queries: list[str]) -> list[list[Rewrite]]:
        return self.rewriter.rewrite_samples(queries, self.samples)  # one sample: rewrite_batch's

    def _texts(self, keys: list[str], rows: list[list[Rewrite]]) -> list[list[str]]:
        """Each query's texts to search: ``rrf``, each rewrite that did not fall back
        (``core.fused_samples``: none when all fell back, the original's list alone); otherwise one
        text, the samples joined and combined by ``mode``. The rewrites are kept."""
        self.last_samples = dict(zip(keys, rows))
        self.last_rewrites = {key: join_samples(row) for key, row in zip(keys, rows)}
        if self.mode == "rrf":
            return [[rewrite.text for rewrite in fused_samples(row)] for row in rows]
        return [[join_samples(row).combined_text(self.mode, self.repeat)] for row in rows]


@dataclass(frozen=True)
class FusedHit:
    """A hit of a fused list: ``docid``, its fused ``score``, and whatever else the pyserini hit it
    came from holds (``lucene_document``, ``raw``...), read through.

    Attributes:
        docid: The document's id.
        score: Its RRF score.
        hit: The pyserini hit (from the original's list when both lists hold it).
    """

    docid: str
    score: float
    hit: Any

    def __getattr__(self, name: str) -> Any:
        return getattr(self.hit, name)
