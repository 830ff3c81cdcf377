"""The embedded BM25Q engine: BRIGHT's BM25, exactly, on sparse matrices.

BRIGHT and TongSearch-QR score with gensim's ``LuceneBM25Model(k1=0.9, b=0.4)`` applied to the
documents *and to the query* ("BM25Q"), over tokens from pyserini's Lucene English analyzer:

    w(t, x) = idf(t) * tf / (tf + k1 * (1 - b + b * len(x) / avgdl)),  idf(t) = ln((N + 1) / (df + 0.5))
    score(q, d) = sum over shared terms of w(t, q) * w(t, d)

``len(q)`` counts only query tokens that occur in the corpus (gensim's ``doc2bow`` drops the
others before weighting). Ranking follows BRIGHT: excluded documents removed, score descending,
ties in corpus order, zero-score documents included when fewer than ``k`` match.
"""

from __future__ import annotations

import hashlib
import json
import logging
from array import array
from collections import Counter
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from .. import bm25q
from ..errors import InputError
from ..lazy import require
from ..analyzer import LuceneEnglishAnalyzer

log = logging.getLogger(__name__)

K1, B = bm25q.K1, bm25q.B
INDEX_FORMAT = 1


class Hit(NamedTuple):
    doc_id: str
    score: float


class Ranking(Sequence[Hit]):
    """Ranked results of one query, kept as two lists; a ``Hit`` is made only when indexed.

    Building 1,000 result objects per query costs more than scoring it, so evaluation reads
    ``doc_ids`` and ``scores`` directly (``as_dict``).
    """

    __slots__ = ("doc_ids", "scores")

    def __init__(self, doc_ids: list[str], scores: list[float]):
        self.doc_ids, self.scores = doc_ids, scores

    def __len__(self) -> int:
        return len(self.doc_ids)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [Hit(d, s) for d, s in zip(self.doc_ids[item], self.scores[item])]
        return Hit(self.doc_ids[item], self.scores[item])

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Ranking({list(self)[:3]!r}{'...' if len(self) > 3 else ''})"

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.doc_ids, self.scores))


class BM25Index:
    """Document weights (float32, documents x terms), idf, and the vocabulary."""

    def __init__(self, doc_ids, vocabulary, idf, weights, avgdl, k1=K1, b=B, analyzer=None):
        self.doc_ids = list(doc_ids)
        self.vocabulary = vocabulary
        self.idf = idf
        self.weights = weights  # scipy.sparse.csc_matrix, shape (num_docs, num_terms)
        self.avgdl = avgdl
        self.k1, self.b = k1, b
        self.analyzer = analyzer or LuceneEnglishAnalyzer()
        self._position = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def build(cls, doc_ids: Sequence[str], texts: Iterable[str], k1=K1, b=B, analyzer=None,
              progress: bool = False) -> "BM25Index":
        np = require("numpy", "eval", "the embedded BM25 engine")
        sparse = require("scipy.sparse", "eval", "the embedded BM25 engine")
        analyzer = analyzer or LuceneEnglishAnalyzer()
        vocabulary: dict[str, int] = {}
        term_ids = array("i")
        doc_lengths = array("i")
        texts = _progress(texts, len(doc_ids), "indexing", progress)
        for text in texts:
            tokens = analyzer(text)
            # New terms get ids in sorted order per document, as gensim's Dictionary assigns them,
            # so that float32 sums run in gensim's order and scores come out bit for bit equal.
            for token in sorted(set(tokens).difference(vocabulary)):
                vocabulary[token] = len(vocabulary)
            term_ids.extend(map(vocabulary.__getitem__, tokens))
            doc_lengths.append(len(tokens))
        if len(doc_lengths) != len(doc_ids):
            raise InputError(f"{len(doc_ids)} document ids but {len(doc_lengths)} texts")
        if not doc_ids:
            raise InputError("cannot index an empty corpus")
        lengths = np.frombuffer(doc_lengths, dtype=np.int32).astype(np.float64)
        rows = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths.astype(np.int64))
        cols = np.frombuffer(term_ids, dtype=np.int32)
        shape = (len(lengths), max(len(vocabulary), 1))
        counts = sparse.coo_matrix((np.ones(len(cols), dtype=np.float64), (rows, cols)), shape=shape)
        tf = counts.tocsc()  # duplicates summed: term frequencies
        num_docs = len(lengths)
        avgdl = float(lengths.sum()) / num_docs or 1.0
        df = np.diff(tf.indptr).astype(np.float64)
        idf = _idf(np, df, num_docs)
        norms = k1 * (1.0 - b + b * lengths / avgdl)
        term_of_entry = np.repeat(np.arange(shape[1]), np.diff(tf.indptr))
        # The operation order is gensim's, so float32 rounding lands on the same values.
        data = idf[term_of_entry] * (tf.data / (tf.data + norms[tf.indices]))
        weights = sparse.csc_matrix((data.astype(np.float32), tf.indices, tf.indptr), shape=shape)
        return cls(doc_ids, vocabulary, idf, weights, avgdl, k1, b, analyzer)

    # -- querying ---------------------------------------------------------------------------

    def query_vector(self, text: str) -> tuple[list[int], list[float]]:
        """Term ids and BM25 weights of a query (gensim's ``model[dictionary.doc2bow(q)]``)."""
        vocabulary = self.vocabulary
        counts = {vocabulary[t]: c for t, c in Counter(self.analyzer(text)).items() if t in vocabulary}
        weights = bm25q.term_weights(counts, lambda t: float(self.idf[t]), self.avgdl, self.k1, self.b)
        return list(weights), list(weights.values())

    def scores(self, text: str):
        """Scores of every document for one query, float32 as in gensim's similarity index."""
        np = require("numpy", "eval", "the embedded BM25 engine")
        ids, weights = self.query_vector(text)
        if not ids:
            return np.zeros(self.num_docs, dtype=np.float32)
        order = np.argsort(ids)
        # Columns in ascending term id: each document's score is summed in float32 in gensim's order.
        columns = self.weights[:, np.asarray(ids)[order]]
        return columns @ np.asarray(weights, dtype=np.float32)[order]

    def score_batch(self, texts: Sequence[str]):
        """Dense scores, shape (len(texts), num_docs)."""
        np = require("numpy", "eval", "the embedded BM25 engine")
        return np.vstack([self.scores(text) for text in texts]) if texts else np.zeros((0, self.num_docs))

    def search_batch(self, texts: Sequence[str], k: int = 1000,
                     excluded: Sequence[Iterable[str]] | None = None) -> list[Ranking]:
        # One sparse product per query: a batched product would multiply every query by the union
        # of all their terms, and transposing its result costs more than the scoring.
        np = require("numpy", "eval", "the embedded BM25 engine")
        return [self._top(np, self.scores(text), k, excluded[i] if excluded is not None else ())
                for i, text in enumerate(texts)]

    def search(self, text: str, k: int = 1000, excluded: Iterable[str] = ()) -> Ranking:
        return self.search_batch([text], k, [excluded])[0]

    def _top(self, np, scores, k, excluded) -> Ranking:
        positions = {self._position[d] for d in excluded if d in self._position}
        if positions:
            scores[list(positions)] = -np.inf
        k = min(k, len(scores) - len(positions))
        if k <= 0:
            return Ranking([], [])
        threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
        candidates = np.flatnonzero(scores >= threshold)
        order = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
        doc_ids = self.doc_ids
        return Ranking([doc_ids[i] for i in order.tolist()], scores[order].tolist())

    # -- persistence ------------------------------------------------------------------------

    def settings(self) -> dict:
        return index_settings(self.k1, self.b, self.analyzer)

    def save(self, folder: Path) -> None:
        np = require("numpy", "eval", "the embedded BM25 engine")
        sparse = require("scipy.sparse", "eval", "the embedded BM25 engine")
        folder = Path(folder)
        partial = folder.with_name(folder.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        sparse.save_npz(partial / "weights.npz", self.weights, compressed=False)
        np.save(partial / "idf.npy", self.idf)
        terms = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        (partial / "terms.json").write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
        (partial / "doc_ids.json").write_text(json.dumps(self.doc_ids, ensure_ascii=False), encoding="utf-8")
        meta = {**self.settings(), "avgdl": self.avgdl, "num_docs": self.num_docs}
        (partial / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if folder.exists():
            _remove_tree(folder)
        partial.rename(folder)

    @classmethod
    def load(cls, folder: Path, analyzer=None) -> "BM25Index":
        np = require("numpy", "eval", "the embedded BM25 engine")
        sparse = require("scipy.sparse", "eval", "the embedded BM25 engine")
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        analyzer = analyzer or LuceneEnglishAnalyzer()
        expected = index_settings(meta["k1"], meta["b"], analyzer)
        if {key: meta.get(key) for key in expected} != expected:
            raise InputError(f"the index in {folder} was built with other settings: {meta}")
        terms = json.loads((folder / "terms.json").read_text(encoding="utf-8"))
        doc_ids = json.loads((folder / "doc_ids.json").read_text(encoding="utf-8"))
        weights = sparse.load_npz(folder / "weights.npz").tocsc()
        idf = np.load(folder / "idf.npy")
        vocabulary = {term: i for i, term in enumerate(terms)}
        return cls(doc_ids, vocabulary, idf, weights, meta["avgdl"], meta["k1"], meta["b"], analyzer)


def index_settings(k1: float, b: float, analyzer) -> dict:
    """Everything besides the corpus that changes an index: stored with it and in its cache key."""
    return {"format": INDEX_FORMAT, "k1": k1, "b": b, **analyzer.settings()}


def _idf(np, df, num_docs):
    """``bm25q.idf`` of every term (once per distinct document frequency)."""
    values, inverse = np.unique(df, return_inverse=True)
    per_value = np.array([bm25q.idf(num_docs, v) for v in values.tolist()])
    return per_value[inverse.reshape(-1)] if len(values) else np.zeros(0)


def corpus_key(doc_ids: Sequence[str], texts: Sequence[str], settings: dict) -> str:
    """A stable hash of the corpus and everything that changes the index built from it."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for doc_id, text in zip(doc_ids, texts):
        digest.update(doc_id.encode("utf-8", "surrogatepass") + b"\x00")
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x01")
    return digest.hexdigest()[:24]


def load_or_build(doc_ids: Sequence[str], texts: Sequence[str], cache_dir: Path | None,
                  k1=K1, b=B, progress: bool = False) -> BM25Index:
    """The index of this corpus from ``cache_dir`` if built before, else built and stored there."""
    analyzer = LuceneEnglishAnalyzer()
    if cache_dir is None:
        return BM25Index.build(doc_ids, texts, k1, b, analyzer, progress)
    settings = index_settings(k1, b, analyzer)
    folder = Path(cache_dir) / f"bm25-{corpus_key(doc_ids, texts, settings)}"
    if (folder / "meta.json").exists():
        try:
            return BM25Index.load(folder, analyzer)
        except (OSError, ValueError, KeyError, InputError) as error:
            log.warning("rebuilding the BM25 index in %s: %s", folder, error)
    index = BM25Index.build(doc_ids, texts, k1, b, analyzer, progress)
    try:
        index.save(folder)
    except OSError as error:
        log.warning("could not store the BM25 index in %s: %s", folder, error)
    return index


def _progress(items, total, desc, enabled):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, unit="doc", leave=False)


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
