"""Retrieval backends for evaluation, one module each, resolved on use.

A retriever indexes one task's corpus and answers batches of queries with ranked ``Hit`` lists,
honouring per-query exclusions (BRIGHT's ``excluded_ids``).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputError
from .bm25 import Hit

RETRIEVERS = {
    "embedded": "tsqr_plugins.search.embedded:EmbeddedBM25",
}


class Retriever(ABC):
    NAME = ""

    @abstractmethod
    def index(self, doc_ids: Sequence[str], texts: Sequence[str]) -> None:
        """Make the corpus searchable (from a cache when it was indexed before)."""

    @abstractmethod
    def search_batch(self, queries: Sequence[str], k: int,
                     excluded: Sequence[Iterable[str]] | None = None) -> list[list[Hit]]:
        """Ranked hits per query (a sequence of ``Hit``), best first, excluded documents left out."""


def make_retriever(spec: str, cache_dir: Path | None = None, progress: bool = False) -> Retriever:
    name, _, argument = spec.partition(":")
    target = RETRIEVERS.get(name)
    if target is None:
        raise InputError(f"unknown retrieval backend {spec!r}; valid: {', '.join(sorted(RETRIEVERS))}")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(argument or None, cache_dir=cache_dir, progress=progress)


__all__ = ["Hit", "Retriever", "RETRIEVERS", "make_retriever"]
