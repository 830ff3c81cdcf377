"""Retrievers for evaluation (`tsqr eval --retriever`), one module each, resolved on use.

A retriever indexes one task's corpus and answers batches of queries with ranked ``Hit`` lists,
honouring per-query exclusions (BRIGHT's ``excluded_ids``).
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputError
from .bm25 import Hit

RETRIEVERS = {
    "embedded": "tsqr_plugins.search.embedded:EmbeddedBM25",
    "pyserini": "tsqr_plugins.search.lucene:PyseriniBM25",
    "pyterrier": "tsqr_plugins.search.terrier:TerrierBM25",
    "dense": "tsqr_plugins.search.dense:DenseRetriever",
    "elasticsearch": "tsqr_plugins.search.engine:ElasticsearchBM25",
    "opensearch": "tsqr_plugins.search.engine:OpenSearchBM25",
}


class Retriever(ABC):
    NAME = ""

    @abstractmethod
    def index(self, doc_ids: Sequence[str], texts: Sequence[str], task: str | None = None,
              prebuilt: str | None = None) -> None:
        """Make the corpus searchable (from a cache when it was indexed before); ``task`` names
        the BRIGHT task, for retrievers whose queries carry task instructions; ``prebuilt`` names an
        index of exactly this corpus that a retriever may have ready-made (pyserini's ``bright-*``)."""

    @abstractmethod
    def search_batch(self, queries: Sequence[str], k: int,
                     excluded: Sequence[Iterable[str]] | None = None) -> list[list[Hit]]:
        """Ranked hits per query (a sequence of ``Hit``), best first, excluded documents left out."""


def retriever_class(spec: str) -> type[Retriever]:
    name = spec.partition(":")[0]
    target = RETRIEVERS.get(name)
    if target is None:
        raise InputError(f"unknown retriever {spec!r}; valid: {', '.join(sorted(RETRIEVERS))}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


# How tsqr eval spells each retriever option.
OPTION_FLAGS = {"index_type": "--dense-index"}


def check_retriever_options(specs: Sequence[str], options: dict) -> None:
    """Every option given (not None) is taken by one of the retrievers ``specs`` names; one that none
    takes is refused, never dropped."""
    for key, value in options.items():
        if value is not None and not any(key in inspect.signature(retriever_class(s)).parameters for s in specs):
            takers = sorted(name for name in RETRIEVERS if key in inspect.signature(retriever_class(name)).parameters)
            raise InputError(f"{OPTION_FLAGS.get(key, key)} applies to the {', '.join(takers) or 'no'} retriever(s), "
                             f"not to --retriever {','.join(specs)}")


def make_retriever(spec: str, cache_dir: Path | None = None, progress: bool = False, **options) -> Retriever:
    """The retriever ``name[:argument]``; of ``options`` (checked with ``check_retriever_options``),
    those its constructor takes."""
    cls = retriever_class(spec)
    accepted = inspect.signature(cls).parameters
    known = {key: value for key, value in options.items() if key in accepted and value is not None}
    return cls(spec.partition(":")[2] or None, cache_dir=cache_dir, progress=progress, **known)


def top_k_excluding(ranked: Iterable[Hit], k: int, excluded: Iterable[str] | None) -> list[Hit]:
    """The first ``k`` hits not in ``excluded`` (retrievers that cannot filter at the source)."""
    skip = set(excluded or ())
    kept = []
    for hit in ranked:
        if hit.doc_id not in skip:
            kept.append(hit)
            if len(kept) == k:
                break
    return kept


def pad_with_zero_scores(hits: list[Hit], k: int, doc_ids: Sequence[str], excluded: Iterable[str] | None) -> list[Hit]:
    """BRIGHT ranks every document (gensim scores them all): engines that return only matching
    documents are padded, in corpus order, with score 0 — as the embedded engine does."""
    if len(hits) >= k:
        return hits
    seen = {hit.doc_id for hit in hits} | set(excluded or ())
    padded = list(hits)
    for doc_id in doc_ids:
        if doc_id not in seen:
            padded.append(Hit(doc_id, 0.0))
            if len(padded) == k:
                break
    return padded


__all__ = ["Hit", "Retriever", "RETRIEVERS", "make_retriever", "pad_with_zero_scores", "top_k_excluding"]
