"""`embedded`: the in-process BM25Q engine (BRIGHT's scoring, no server, no JVM)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputError
from . import Retriever
from .bm25 import B, K1, BM25Index, Hit, load_or_build


class EmbeddedBM25(Retriever):
    NAME = "embedded"

    def __init__(self, argument: str | None = None, cache_dir: Path | None = None, progress: bool = False,
                 k1: float = K1, b: float = B):
        if argument:
            raise InputError(f"the embedded retriever takes no argument (got {argument!r})")
        self.cache_dir = Path(cache_dir) / "indexes" if cache_dir else None
        self.progress = progress
        self.k1, self.b = k1, b
        self._index: BM25Index | None = None

    def index(self, doc_ids: Sequence[str], texts: Sequence[str], task: str | None = None,
              prebuilt: str | None = None) -> None:
        self._index = load_or_build(doc_ids, texts, self.cache_dir, self.k1, self.b, self.progress)

    def search_batch(self, queries: Sequence[str], k: int,
                     excluded: Sequence[Iterable[str]] | None = None) -> list[list[Hit]]:
        if self._index is None:
            raise InputError("index a corpus before searching")
        return self._index.search_batch(list(queries), k, excluded)
