"""`pyterrier`: BM25 on a Terrier index built by PyTerrier, and the query cleaning Terrier needs.

Terrier's query parser reads syntax in a query: ``word:word`` is a field query (on an index without
fields it throws ``IllegalStateException``), ``#combine(...)``/``#1(...)`` are match operators,
``term^2`` is a weight, ``applypipeline:off`` turns stemming off. PyTerrier's ``Retriever``
tokenises a query only when it holds punctuation other than ``:``, so a model's ``Answer: moths
follow the moon`` reaches the parser as syntax. :func:`query_tokeniser` makes any text a plain
bag of Terrier's own tokens (what ``pt.rewrite.tokenise()`` does), so model output is a value,
never query syntax.

The eval retriever builds one index per corpus with ``pt.IterDictIndexer`` (Terrier's English
tokeniser, stopwords and Porter stemmer) under the cache folder and scores with Terrier's BM25 at
BRIGHT's k1=0.9, b=0.4: Terrier's BM25 (Robertson's idf, no query-side weighting), not BRIGHT's
BM25Q, so its figures sit beside the other backends', not on them. PyTerrier fetches Terrier's
jars from Maven Central on first use into ``$PYTERRIER_HOME`` (~/.pyterrier); ``make test`` does
that at setup, with the versions pinned by PyTerrier's own ``TERRIER_VERSION`` and
``TERRIER_HELPER_VERSION`` variables.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import InputError
from ..lazy import require
from . import Retriever, pad_with_zero_scores, top_k_excluding
from .bm25 import B, K1, Hit, corpus_key

log = logging.getLogger(__name__)
INDEX_FORMAT = "terrier-iterdict-1"
EXTRA = "pyterrier"


def pyterrier(purpose: str) -> Any:
    """The ``pyterrier`` module, imported now (it does not start the JVM).

    Args:
        purpose: What needs it, for the error message.

    Raises:
        MissingDependencyError: python-terrier (the ``pyterrier`` extra) is not installed.
    """
    return require("pyterrier", EXTRA, purpose)


def query_tokeniser(tokeniser: Any = "english") -> Callable[[str], str]:
    """A function making any text a query Terrier's parser reads as plain terms: the text's tokens
    by a Terrier tokeniser, joined by spaces (as ``pt.rewrite.tokenise()``). The JVM starts on the
    first call, not here.

    Args:
        tokeniser: A ``pt.TerrierTokeniser`` or its name (``"english"``, the default, as
            ``pt.IterDictIndexer`` and ``pt.terrier.Retriever`` tokenise; ``"utf"`` ...), a Java
            tokeniser class name, a function ``str -> list[str]``, or None: the text as it is (for
            retrievers other than Terrier's, which parse no syntax).

    Returns:
        ``text -> query string``.
    """
    if tokeniser is None:
        return lambda text: text
    if callable(tokeniser):
        return lambda text: " ".join(tokeniser(text))
    java: list[Any] = []

    def tokenise(text: str) -> str:
        if not java:
            pt = pyterrier("Terrier's tokeniser")
            try:
                name = pt.terrier.TerrierTokeniser(tokeniser)
            except ValueError:
                name = tokeniser  # a TerrierTokeniser already, or a Java class name
            java.append(pt.terrier.TerrierTokeniser.java_tokeniser(name))
        return " ".join(str(token) for token in java[0].getTokens(text))

    return tokenise


class TerrierBM25(Retriever):
    """``--retriever pyterrier``: Terrier's BM25 (k1=0.9, b=0.4) on an index PyTerrier builds.

    Args:
        argument: None (the retriever takes no argument).
        cache_dir: The ``--index-cache`` folder; indexes go under ``indexes/terrier-<hash>``.
        progress: Show PyTerrier's indexing progress.

    Raises:
        InputError: An argument was given.
        MissingDependencyError: python-terrier (the ``pyterrier`` extra) is not installed.
    """

    NAME = "pyterrier"

    def __init__(self, argument: str | None = None, cache_dir: Path | None = None, progress: bool = False):
        if argument:
            raise InputError(f"the pyterrier retriever takes no argument (got {argument!r})")
        pyterrier("the pyterrier eval retriever")
        self.cache_dir = Path(cache_dir) / "indexes" if cache_dir else Path(tempfile.mkdtemp(prefix="tsqr-terrier-"))
        self.progress = progress
        self._index_path: Path | None = None
        self._tokenise = query_tokeniser("english")

    def index(self, doc_ids: Sequence[str], texts: Sequence[str], task: str | None = None,
              prebuilt: str | None = None) -> None:
        """Index the corpus once per content (a ``done`` file marks a finished index).

        Args:
            doc_ids: The documents' ids.
            texts: Their texts.
            task: Unused (no task instructions).
            prebuilt: Unused (PyTerrier has no prebuilt BRIGHT indexes).
        """
        if len(texts) != len(doc_ids):
            raise InputError(f"{len(doc_ids)} document ids but {len(texts)} texts")
        folder = self.cache_dir / f"terrier-{corpus_key(doc_ids, texts, {'format': INDEX_FORMAT})}"
        if not (folder / "done").exists():
            build_index(folder / "index", doc_ids, texts, self.progress)
            (folder / "done").write_text(json.dumps({"documents": len(doc_ids)}))
        self._index_path = folder / "index"
        self._doc_ids = list(doc_ids)

    def search_batch(self, queries: Sequence[str], k: int,
                     excluded: Sequence[Iterable[str]] | None = None) -> list[list[Hit]]:
        """Ranked hits per query, BRIGHT's exclusions left out, padded with zero scores to ``k``.

        Args:
            queries: The query texts (any characters: they are tokenised first).
            k: Hits per query.
            excluded: Per query, document ids to leave out.
        """
        if self._index_path is None:
            raise InputError("index a corpus before searching")
        import pandas as pd

        skips = [set(excluded[i]) if excluded else set() for i in range(len(queries))]
        topics = pd.DataFrame({"qid": [str(i) for i in range(len(queries))],
                               "query": [self._tokenise(query) for query in queries]})
        results = bm25(self._index_path, k + max((len(s) for s in skips), default=0))(topics)
        by_qid = {qid: list(zip(group["docno"], group["score"])) for qid, group in results.groupby("qid", sort=False)}
        ranked = []
        for i, skip in enumerate(skips):
            hits = (Hit(str(doc_id), float(score)) for doc_id, score in by_qid.get(str(i), []))
            ranked.append(pad_with_zero_scores(top_k_excluding(hits, k, skip), k, self._doc_ids, skip))
        return ranked


def build_index(path: Path, doc_ids: Sequence[str], texts: Sequence[str], progress: bool = False) -> Path:
    """A Terrier index of the documents at ``path`` (replaced if there), built by
    ``pt.IterDictIndexer`` with its defaults (English tokeniser, Terrier stopwords, Porter stemmer),
    the ids stored as ``docno``.

    Args:
        path: The index folder.
        doc_ids: The documents' ids.
        texts: Their texts.
        progress: Show PyTerrier's progress bar.

    Returns:
        ``path``.
    """
    pt = pyterrier("building a Terrier index")
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    width = max((len(doc_id.encode("utf-8")) for doc_id in doc_ids), default=1)
    log.info("building a Terrier index of %d documents in %s", len(doc_ids), path)
    indexer = pt.IterDictIndexer(str(path), meta={"docno": max(width, 20)}, threads=1, verbose=progress)
    indexer.index({"docno": doc_id, "text": text} for doc_id, text in zip(doc_ids, texts))
    return path


def bm25(index: Any, num_results: int = 1000, k1: float = K1, b: float = B) -> Any:
    """PyTerrier's ``Retriever`` with Terrier's BM25 at ``k1`` and ``b`` (BRIGHT's 0.9 and 0.4).
    Terrier reads k1 from the ``bm25.k_1`` property, which is global to the JVM.

    Args:
        index: A Terrier index folder, ``IndexRef`` or index.
        num_results: Documents per query.
        k1: BM25's k1.
        b: BM25's b (Terrier's ``c`` control).

    Returns:
        A ``pt.terrier.Retriever``.
    """
    pt = pyterrier("Terrier's BM25")
    return pt.terrier.Retriever(str(index) if isinstance(index, Path) else index, wmodel="BM25",
                                num_results=num_results, controls={"c": str(b)},
                                properties={"bm25.k_1": str(k1)})
