"""`BM25QSearcher`: pyserini's ``LuceneSearcher`` surface scoring BRIGHT/TongSearch's query-side BM25.

Lucene BM25 (k1=0.9, b=0.4) on the documents, and each unique query term boosted by its own BM25
weight computed against the index (``bm25q.term_weights``).

- pyserini >= 1.0 (Java 21+): Anserini's own ``QuerySideBm25QueryGenerator`` (what pyserini's
  ``--bm25qs`` uses), through pyserini's threaded ``batch_search``. It counts every query token in
  |q|, also those the index does not hold; BRIGHT's gensim recipe counts only known ones, so for
  queries with out-of-vocabulary tokens the weights are slightly smaller (equal when every token is
  known). ``native=False`` builds BRIGHT's exact weights instead.
- pyserini 0.25 (Java 17) has no such generator: the searcher builds the boosted ``BooleanQuery``
  itself with BRIGHT's weights (equal to the embedded engine's, tested).

``scoring="bm25"`` gives plain bag-of-words BM25 instead. The JVM starts on first use, never on
import. ``tsqr eval``'s pyserini backend searches with it; the Pyserini adapter
(``adapters.pyserini.RewritingSearcher``) rewrites in front of it.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, Sequence

from .. import bm25q
from ..analyzer import LuceneEnglishAnalyzer
from ..errors import InputError
from ..lazy import require

SCORINGS = ("bm25q", "bm25")
MAX_CLAUSES = 65536  # a 500-token rewrite has far fewer unique terms; Lucene's default is 1,024


def pyserini_lucene():
    """Import pyserini's searcher with a JVM ready, or say exactly what is missing."""
    from ..java import ensure_java_home

    ensure_java_home()
    os.environ.setdefault("OPENAI_API_KEY", "unused")  # pyserini 1.x builds an OpenAI client at import
    return require("pyserini.search.lucene", "pyserini", "the Pyserini adapter")


class BM25QSearcher:
    """``search`` / ``batch_search`` / ``doc`` / ``set_bm25`` of ``LuceneSearcher``, scoring BM25Q.

    Keyword arguments of ``search``/``batch_search`` (``fields``, ``remove_dups``, ...) go to
    pyserini where it applies them (plain BM25, or pyserini >= 1.0's generator); where the searcher
    builds the query itself (pyserini 0.25) they are refused, never dropped.

    Args:
        searcher: A Lucene index folder or an existing pyserini ``LuceneSearcher``.
        scoring: ``"bm25q"`` (query-side BM25) or ``"bm25"`` (plain bag-of-words BM25).
        k1: BM25's k1 (0.9, as BRIGHT).
        b: BM25's b (0.4, as BRIGHT).
        field: The index field searched (pyserini's ``contents``).
        native: Use Anserini's own query-side BM25 generator (pyserini >= 1.0, ``field="contents"``);
            None: when available; False: BRIGHT's exact weights, built here.
    """

    def __init__(self, searcher: Any, scoring: str = "bm25q", k1: float = bm25q.K1, b: float = bm25q.B,
                 field: str = "contents", native: bool | None = None):
        if scoring not in SCORINGS:
            raise InputError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
        lucene = pyserini_lucene()
        if isinstance(searcher, (str, os.PathLike)):
            if not os.path.isdir(searcher):
                raise InputError(f"no Lucene index at {searcher}")
            searcher = lucene.LuceneSearcher(str(searcher))
        self.searcher = searcher
        self.scoring = scoring
        self.field = field
        self.analyzer = LuceneEnglishAnalyzer()  # token for token pyserini's default analyzer
        self._stats: dict[str, float] | None = None
        self._df: dict[str, int] = {}
        # Anserini's generator where pyserini has it (>= 1.0) and the field is the one it reads
        available = hasattr(lucene, "JQuerySideBm25QueryGenerator") and field == "contents"
        if native and not available:
            raise InputError("native query-side BM25 needs pyserini >= 1.0 and field='contents'")
        self.native = available if native is None else bool(native)
        self._generator = None
        self.set_bm25(k1, b)
        self._query_classes = _QueryClasses()

    # -- the LuceneSearcher surface --------------------------------------------------------

    def set_bm25(self, k1: float = bm25q.K1, b: float = bm25q.B) -> None:
        """Set BM25's parameters, for the documents and the query-side weights alike.

        Args:
            k1: Term-frequency saturation (default 0.9).
            b: Length normalisation (default 0.4).
        """
        self.k1, self.b = float(k1), float(b)
        self.searcher.set_bm25(self.k1, self.b)
        self._generator = None  # query-side weights use the same k1, b

    def doc(self, docid):
        """The stored document, as ``LuceneSearcher.doc`` gives it.

        Args:
            docid: The document's id (or Lucene's internal number).
        """
        return self.searcher.doc(docid)

    def search(self, q: str, k: int = 10, **kwargs):
        """The top ``k`` hits of one query.

        Args:
            q: The query text.
            k: Hits to return.
            **kwargs: Further ``LuceneSearcher.search`` arguments, where pyserini applies them.
        """
        return self._search_text(q, k, **kwargs)

    def _search_text(self, q: str, k: int, **kwargs):
        # what search does; batch_search's one-by-one path calls it (never an override of search)
        if self.scoring == "bm25":
            return self.searcher.search(q, k=k, **kwargs)
        if self.native:
            return self.searcher.search(q, k=k, query_generator=self.query_generator(), **kwargs)
        self._refuse(kwargs)
        query = self.query_side_bm25(q)
        if query is None:
            return []
        return self.searcher.search(query, k=k)

    def batch_search(self, queries: Sequence[str], qids: Sequence[str], k: int = 10, threads: int = 1,
                     **kwargs) -> dict[str, list]:
        """The top ``k`` hits of each query.

        Args:
            queries: The query texts.
            qids: Their ids, one per query.
            k: Hits per query.
            threads: Pyserini's search threads (pyserini 0.25 with BM25Q searches one by one).
            **kwargs: Further ``LuceneSearcher.batch_search`` arguments, where pyserini applies them.

        Returns:
            ``{query id: hits}``.
        """
        if len(queries) != len(qids):
            raise InputError(f"{len(queries)} queries but {len(qids)} query ids")
        qids = [str(q) for q in qids]
        if self.scoring == "bm25":
            return self.searcher.batch_search(list(queries), qids, k=k, threads=threads, **kwargs)
        if self.native:
            return self.searcher.batch_search(list(queries), qids, k=k, threads=threads,
                                              query_generator=self.query_generator(), **kwargs)
        # pyserini 0.25: query objects cannot go through its threaded batch_search; one search each.
        self._refuse(kwargs)
        return {qid: self._search_text(text, k) for qid, text in zip(qids, queries)}

    def __getattr__(self, name):
        # Everything else of LuceneSearcher (num_docs, close, ...) goes to the wrapped searcher.
        return getattr(self.__dict__["searcher"], name)

    # -- query-side BM25 ---------------------------------------------------------------------

    def _refuse(self, kwargs: dict) -> None:
        if kwargs:
            raise InputError(f"{', '.join(sorted(kwargs))}: pyserini applies these when it builds the query "
                             "(scoring='bm25', or BM25Q on pyserini >= 1.0); this searcher builds the BM25Q "
                             "query itself on this pyserini, and does not take them")

    def query_generator(self):
        """Anserini's ``QuerySideBm25QueryGenerator`` on this index (pyserini >= 1.0)."""
        if self._generator is None:
            lucene = require("pyserini.search.lucene", "pyserini", "the Pyserini adapter")
            self._generator = lucene.JQuerySideBm25QueryGenerator(self.k1, self.b, self._reader().reader)
        return self._generator

    def query_weights(self, text: str) -> dict[str, float]:
        """Query-side BM25 weight of each query term the index knows (BRIGHT's gensim formula).

        Args:
            text: The query text, analysed as pyserini's default analyzer does.
        """
        counts = {t: c for t, c in Counter(self.analyzer(text)).items() if self._doc_freq(t) > 0}
        stats = self._index_stats()
        return bm25q.term_weights(counts, lambda t: bm25q.idf(stats["documents"], self._doc_freq(t)),
                                  stats["avgdl"], self.k1, self.b)

    def query_side_bm25(self, text: str):
        """A Lucene ``BooleanQuery`` of the query's terms, each boosted by its query-side weight;
        None when the index knows none of them.

        Args:
            text: The query text.
        """
        weights = self.query_weights(text)
        if not weights:
            return None
        classes = self._query_classes
        builder = classes.BooleanQueryBuilder()
        for term, weight in weights.items():
            clause = classes.BoostQuery(classes.TermQuery(classes.Term(self.field, term)), float(weight))
            builder.add(clause, classes.SHOULD)
        return builder.build()

    def _index_stats(self) -> dict[str, float]:
        if self._stats is None:
            reader = self._reader()
            stats = reader.stats()
            documents = int(stats["documents"])
            self._stats = {"documents": documents, "avgdl": int(stats["total_terms"]) / max(documents, 1)}
        return self._stats

    def _doc_freq(self, term: str) -> int:
        df = self._df.get(term)
        if df is None:
            df, _ = self._reader().get_term_counts(term, analyzer=None)
            self._df[term] = df = int(df or 0)
        return df

    def _reader(self):
        reader = self.__dict__.get("_index_reader")
        if reader is None:
            reader = getattr(self.searcher, "index_reader", None)  # pyserini >= 1.0 keeps one
            if reader is None:
                index = require("pyserini.index.lucene", "pyserini", "the Pyserini adapter")
                reader_class = getattr(index, "LuceneIndexReader", None) or index.IndexReader  # renamed in 1.0
                reader = reader_class(self.searcher.index_dir)
            self.__dict__["_index_reader"] = reader
        return reader


class _QueryClasses:
    """Lucene query classes through pyjnius, and the raised clause limit."""

    def __init__(self):
        from pyserini.pyclass import autoclass

        self.Term = autoclass("org.apache.lucene.index.Term")
        self.TermQuery = autoclass("org.apache.lucene.search.TermQuery")
        self.BoostQuery = autoclass("org.apache.lucene.search.BoostQuery")
        utils = autoclass("io.anserini.search.query.QueryGeneratorUtils")
        self.BooleanQueryBuilder = utils.getBooleanQueryBuilder
        self.SHOULD = utils.getBooleanClauseShould()
        autoclass("org.apache.lucene.search.IndexSearcher").setMaxClauseCount(MAX_CLAUSES)
