"""TongSearch-QR in PyTerrier: a ``pt.Transformer`` that rewrites the ``query`` column.

    import pyterrier as pt
    from tsqr_plugins import Rewriter, load_backend, with_cache
    from tsqr_plugins.adapters.pyterrier import TongSearchQRRewrite

    rewriter = Rewriter(with_cache(load_backend("openai", base_url="http://127.0.0.1:8000/v1")))
    bm25 = pt.terrier.Retriever(index, wmodel="BM25")
    pipeline = TongSearchQRRewrite(rewriter) >> bm25
    results = pipeline.search("why do moths circle lamps?")
    pt.Experiment([bm25, pipeline], topics, qrels, ["ndcg_cut_10"])

As PyTerrier's own query rewriters do (``pt.rewrite.SDM``, ``RM3``), the original query moves to
``query_0`` (``pt.model.push_queries``; ``pt.rewrite.reset()`` brings it back) and ``query`` holds
what is searched. The whole frame is rewritten with one ``Rewriter.rewrite_batch`` call, so a
cached rewriter (``with_cache``) answers from the same SQLite cache as every other tsqr surface.

Model output is a value, never query syntax: the text searched is the rewrite's Terrier tokens
(``pt.rewrite.tokenise()``'s cleaning), so ``Answer: ...``, ``#combine``, ``^2`` or quotes in a
rewrite cannot reach Terrier's query parser as operators (see ``search.terrier``).
"""

from __future__ import annotations

from typing import Any

from ..combine import DEFAULT_REPEAT, MODES
from ..core import Rewrite, Rewriter, check_samples, fused_samples, join_samples, validate_queries
from ..errors import InputError
from ..fusion import RRF_K, best_first, check_rrf_k, rrf_ranked
from ..search.terrier import pyterrier, query_tokeniser

pt = pyterrier("the PyTerrier adapter")
import pandas as pd  # noqa: E402  (a PyTerrier dependency)

__all__ = ["TongSearchQRFusion", "TongSearchQRRewrite"]


class TongSearchQRRewrite(pt.Transformer):
    """Rewrites each query of a topics (or results) frame with TongSearch-QR.

    Output: the input frame with ``query`` pushed to ``query_0`` (earlier ``query_0`` to
    ``query_1`` ...) and ``query`` set to the text to search. A failed rewrite searches the original
    query (``Rewrite.fallback``) unless the rewriter is strict. The rewrites of the latest call are
    kept in ``last_rewrites``, one per distinct query, in order of first appearance.

    Args:
        rewriter: Makes the rewrites; its backend's cache (``with_cache``) is shared with every
            other tsqr surface using the same file.
        mode: ``"replace"`` (the paper: the rewrite alone), ``"concat"`` (the original ``repeat``
            times, then the rewrite), ``"adaptive"`` (as concat, copies sized to the rewrite) or
            ``"both"`` (here the rewrite; fuse with the original through :class:`TongSearchQRFusion`).
        repeat: ``concat`` only: how many times the original goes before the rewrite.
        samples: Rewrites per query (``Rewriter.rewrite_samples``, one engine call where the engine
            samples several): searched joined (``core.join_samples``); :class:`TongSearchQRFusion`
            fuses the original's results with each sample's that did not fall back. Default 1.
        tokeniser: How the text becomes a query Terrier parses as plain terms: ``"english"``
            (default; as ``pt.terrier.Retriever`` and ``pt.IterDictIndexer`` tokenise), another
            ``pt.TerrierTokeniser`` or its name, a function ``str -> list[str]``, or None to leave
            the text as it is (for retrievers that parse no query syntax, e.g. dense ones).

    Raises:
        InputError: ``rewriter`` is not a Rewriter, an unknown ``mode`` (``"rrf"`` is
            :class:`TongSearchQRFusion`), or ``samples`` below 1.
    """

    def __init__(self, rewriter: Rewriter, mode: str = "replace", repeat: int = DEFAULT_REPEAT,
                 tokeniser: Any = "english", samples: int = 1) -> None:
        if not isinstance(rewriter, Rewriter):
            raise InputError(f"rewriter must be a tsqr_plugins.Rewriter, got {type(rewriter).__name__}")
        if mode == "rrf":
            raise InputError("rrf needs the retriever: TongSearchQRFusion(retriever, TongSearchQRRewrite(rewriter))")
        if mode not in MODES:
            raise InputError(f"unknown combine mode {mode!r}; choose one of {list(MODES)}")
        self.rewriter = rewriter
        self.mode, self.repeat, self.tokeniser = mode, repeat, tokeniser
        self._tokenise = query_tokeniser(tokeniser)
        self.samples = check_samples(samples)
        self.last_rewrites: list[Rewrite] = []  # several samples: joined
        self.last_samples: list[list[Rewrite]] = []

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """The frame with its queries rewritten (one backend call for the whole frame).

        Args:
            inp: A frame with a ``query`` column (topics, or results being re-ranked).

        Returns:
            A copy with ``query_0`` the original and ``query`` the text to search.

        Raises:
            InputError: No ``query`` column, or a query that is not a non-empty string.
            BackendError: With a strict rewriter, when the backend fails.
        """
        rows = self._rows(inp)
        return self._frame(inp, [join_samples(row) for row in rows])

    def sample_frames(self, inp: pd.DataFrame) -> list[pd.DataFrame]:
        """The frames :class:`TongSearchQRFusion` retrieves for (one backend call for them all):
        frame ``i`` holds each query's ``i``-th rewrite that did not fall back
        (``core.fused_samples``), as :meth:`transform` would give it alone; a query with fewer is
        left out of the later frames (all fell back: of every frame, the original's list alone).

        Args:
            inp: A frame with a ``query`` column.
        """
        fused = {row[0].original: fused_samples(row) for row in self._rows(inp)}
        frames = []
        for i in range(max((len(samples) for samples in fused.values()), default=0)):
            own = inp[[len(fused[query]) > i for query in inp["query"]]]
            frames.append(self._frame(own, [samples[i] for samples in fused.values() if len(samples) > i]))
        return frames

    def _rows(self, inp: pd.DataFrame) -> list[list[Rewrite]]:
        """Each distinct query's rewrites, one per sample, from one backend call (kept)."""
        if "query" not in inp.columns:
            raise InputError(f"TongSearchQRRewrite needs a 'query' column, got {list(inp.columns)}")
        validate_queries(list(inp["query"]))  # before they are keys: a list in a cell is unhashable
        distinct = list(dict.fromkeys(inp["query"]))
        rows = self.rewriter.rewrite_samples(distinct, self.samples)  # one sample: rewrite_batch's
        self.last_samples, self.last_rewrites = rows, [join_samples(row) for row in rows]
        return rows

    def _frame(self, inp: pd.DataFrame, rewrites: list[Rewrite]) -> pd.DataFrame:
        texts = {rewrite.original: self.search_text(rewrite) for rewrite in rewrites}
        out = pt.model.push_queries(inp)
        out["query"] = [texts[query] for query in inp["query"]]
        return out

    def search_text(self, rewrite: Rewrite) -> str:
        """What is searched for one rewrite: combined by ``mode``, then tokenised; the original's
        tokens if the combination has none (a rewrite of punctuation alone).

        Args:
            rewrite: A rewrite, carrying its original.
        """
        text = self._tokenise(rewrite.combined_text(self.mode, self.repeat))
        return text if text.strip() else self._tokenise(rewrite.original)

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """The output columns, for ``pt.inspect`` (``query_0``... added, ``query`` kept).

        Args:
            input_columns: The input frame's columns.
        """
        if "query" not in input_columns:
            raise InputError(f"TongSearchQRRewrite needs a 'query' column, got {list(input_columns)}")
        pushed = [c for c in input_columns if c == "query" or c.startswith("query_")]
        return [*input_columns, f"query_{len(pushed) - 1}"]

    def __repr__(self) -> str:
        return f"TongSearchQRRewrite({self.rewriter.model!r}, mode={self.mode!r})"


class TongSearchQRFusion(pt.Transformer):
    """``rrf``: the retriever's results for the original query and for its rewrite (with
    ``samples``, each sample's that did not fall back; none when the rewrite fell back), fused by
    reciprocal rank (``tsqr_plugins.fusion``, as the other hosts' ``rrf``). Results come back best
    first with their fused ``score`` and a new ``rank``; ``query`` is the original, ``query_0``
    absent. Cut them with ``% k`` as any PyTerrier ranking.

    Args:
        retriever: A PyTerrier retrieval transformer (e.g. ``pt.terrier.Retriever``) taking topics.
        rewrite: The rewriting transformer (its mode is the rewrite's text; ``"replace"`` is the
            usual choice).
        rrf_k: The rank constant (60), a number >= 0.

    Raises:
        InputError: ``rewrite`` is not a :class:`TongSearchQRRewrite`, or ``rrf_k`` is not a finite
            number >= 0.
    """

    def __init__(self, retriever: Any, rewrite: TongSearchQRRewrite, rrf_k: float = RRF_K) -> None:
        if not isinstance(rewrite, TongSearchQRRewrite):
            raise InputError(f"rewrite must be a TongSearchQRRewrite, got {type(rewrite).__name__}")
        self.retriever, self.rewrite, self.rrf_k = retriever, rewrite, check_rrf_k(rrf_k)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """The fused results of each topic.

        Args:
            inp: Topics: ``qid`` and ``query`` (and any other columns, kept). A topic given twice
                (the same qid and query) is fused once.

        Returns:
            A results frame: the topic's columns, the retrievers' document columns, fused ``score``
            and ``rank`` (from 0, as PyTerrier ranks).

        Raises:
            InputError: No ``qid`` or ``query`` column, a topic without a qid, one qid with two
                different queries, or a query that is not a non-empty string.
        """
        inp = self._topics(inp)
        rewritten = [pt.model.pop_queries(self.retriever(frame)) for frame in self.rewrite.sample_frames(inp)]
        original = self.retriever(self._tokenised(inp))
        rows = []
        for qid, topic in inp.groupby("qid", sort=False):
            # a retriever may answer another type of qid (Terrier answers 1 as "1"): compared as text
            lists = [frame[frame["qid"].astype(str) == str(qid)].sort_values("rank") for frame in (original, *rewritten)]
            fused = rrf_ranked([list(hits["docno"]) for hits in lists], self.rrf_k)
            first: dict[str, dict] = {}
            for hits in lists:
                for hit in hits.to_dict("records"):
                    first.setdefault(hit["docno"], hit)
            topic_row = topic.iloc[0].to_dict()
            for rank, docno in enumerate(best_first(fused)):
                rows.append({**first[docno], **topic_row, "score": fused[docno], "rank": rank})
        columns = [*inp.columns, *[c for c in original.columns if c not in inp.columns]]
        return pd.DataFrame(rows, columns=columns)

    @staticmethod
    def _topics(inp: pd.DataFrame) -> pd.DataFrame:
        """Each topic once: a qid is one ranking, so one query (a repeated row would count each of
        its documents once per copy in the fusion)."""
        for column in ("qid", "query"):
            if column not in inp.columns:
                raise InputError(f"TongSearchQRFusion needs a '{column}' column, got {list(inp.columns)}")
        if inp["qid"].isna().any():
            raise InputError(f"TongSearchQRFusion needs a qid for every topic; row {int(inp['qid'].isna().argmax())} has none")
        validate_queries(list(inp["query"]))
        queries = inp.groupby("qid", sort=False)["query"].nunique()
        if (queries > 1).any():
            qid = queries[queries > 1].index[0]
            raise InputError(f"qid {qid!r} has {queries[qid]} different queries; a topic is searched as one query")
        return inp.drop_duplicates(["qid", "query"])

    def _tokenised(self, inp: pd.DataFrame) -> pd.DataFrame:
        out = inp.copy()
        out["query"] = [self.rewrite._tokenise(query) for query in inp["query"]]
        return out

    def __repr__(self) -> str:
        return f"TongSearchQRFusion({self.retriever!r}, {self.rewrite!r}, rrf_k={self.rrf_k})"

