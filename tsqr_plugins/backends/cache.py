"""A backend wrapper that answers from the persistent rewrite cache and stores what it generates."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from tsqr_plugins.backends.base import Backend, Completion, cacheable, n_per_query, sample_key
from tsqr_plugins.cache import RewriteCache, cache_key
from tsqr_plugins.errors import CacheError
from tsqr_plugins.params import GenerationParams
from tsqr_plugins.prompts import Prompt

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$TSQR_CACHE_DIR``, else ``$XDG_CACHE_HOME/tsqr``, else ``~/.cache/tsqr``."""
    if os.environ.get("TSQR_CACHE_DIR"):
        return Path(os.environ["TSQR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tsqr"


def default_cache_path(backend: Backend) -> Path:
    """One file per backend and model, so a default cache never mismatches."""
    digest = cache_key(backend.cache_identity(), "", "", "")[:16]
    return default_cache_dir() / f"{backend.NAME}-{digest}.sqlite"


def sample_keys(identity: Mapping[str, str], prompt_id: str, params: GenerationParams, query: str,
                n: int) -> list[str]:
    """The cache keys of one query's ``n`` samples, each under its index (:func:`sample_key`: sample
    0 is the single rewrite's entry). The one keying of samples, for ``CachedBackend`` and ``tsqr serve``.

    Args:
        identity: The cache's identity (a backend's ``cache_identity()``).
        prompt_id: The prompt's id.
        params: The sampling parameters.
        query: The original query.
        n: Samples, >= 1.
    """
    return [cache_key(identity, prompt_id, sample_key(params, i), query) for i in range(n)]


def sample_entries(keys: Sequence[str], prompt: Prompt, params: GenerationParams, query: str,
                   completions: Sequence[Completion], stored: Mapping[str, str] | None = None) -> Iterator[tuple]:
    """The ``RewriteCache.put_many`` rows of one query's samples worth storing: each ``cacheable``
    completion under its index, the ones in ``stored`` (already in the cache) left out.

    Args:
        keys: The samples' keys, from :func:`sample_keys`.
        prompt: The prompt that made them.
        params: The sampling parameters.
        query: The original query.
        completions: The samples, in order.
        stored: Keys already in the cache.
    """
    stored = stored or {}
    return ((key, prompt.id, sample_key(params, i), query, completion.text)
            for i, (key, completion) in enumerate(zip(keys, completions))
            if key not in stored and cacheable(completion, prompt))


class CachedBackend(Backend):
    """Hits come from SQLite; misses go to ``inner`` and successful answers (``cacheable``) are
    stored. What :func:`~tsqr_plugins.backends.with_cache` builds. A cache that cannot be read or
    written is logged (once per cause) and the rewrites are answered all the same.

    Args:
        inner: The backend that generates the misses.
        path: The SQLite file; None: one per backend and model under the default cache folder.
    """

    NAME = "cache"

    def __init__(self, inner: Backend, path: str | Path | None = None) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.store = RewriteCache(
            path if path is not None else default_cache_path(inner),
            identity=inner.cache_identity(),
        )
        self._warned: set[str] = set()

    def generate(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams) -> list[Completion]:
        params_key = params.key()
        keys = [self.store.key(prompt.id, params_key, query) for query in queries]
        try:
            hits = self.store.get_many(keys)
        except CacheError as error:
            self._warn(f"rewrite cache read failed (treated as a miss): {error}")
            hits = {}
        misses = [index for index, key in enumerate(keys) if key not in hits]
        fresh = self.inner.generate([queries[index] for index in misses], prompt, params) if misses else []
        hits = {**hits, **self._store(
            (keys[index], prompt.id, params_key, queries[index], completion.text)
            for index, completion in zip(misses, fresh)
            if cacheable(completion, prompt)
        )}
        results = [Completion(text=hits[key], cached=True) if key in hits else None for key in keys]
        for index, completion in zip(misses, fresh):
            if results[index] is None:  # else another writer's, kept in the cache
                results[index] = completion
        return results  # type: ignore[return-value]

    def generate_samples(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams,
                         n: int) -> list[list[Completion]]:
        """``n`` samples per query, each cached under its sample index (sample 0 is the single
        rewrite's entry): a replay gives the same texts. A query missing any sample is sampled
        again whole, in one call, and only its missing samples are stored.

        Args:
            queries: The search queries.
            prompt: The prompt.
            params: How to sample.
            n: Samples per query.
        """
        keys = [sample_keys(self.store.identity, prompt.id, params, query, n) for query in queries]
        try:
            hits = self.store.get_many(key for row in keys for key in row)
        except CacheError as error:
            self._warn(f"rewrite cache read failed (treated as a miss): {error}")
            hits = {}
        misses = [index for index, row in enumerate(keys) if any(key not in hits for key in row)]
        fresh = n_per_query(self.inner.generate_samples([queries[index] for index in misses], prompt, params, n),
                            len(misses), n, self.inner.NAME) if misses else []
        hits = {**hits, **self._store(entry for index, samples in zip(misses, fresh)
                                      for entry in sample_entries(keys[index], prompt, params, queries[index], samples, hits))}
        generated = dict(zip(misses, fresh))
        return [[Completion(text=hits[key], cached=True) if key in hits else generated[index][i]
                 for i, key in enumerate(row)] for index, row in enumerate(keys)]

    def _store(self, entries: Iterable[tuple[str, str, str, str, str]]) -> dict[str, str]:
        """Store ``entries``; what another writer (a process, a thread) stored meanwhile for the same
        keys, to be answered instead, so that every caller gets what a replay will give."""
        try:
            return self.store.put_many(entries)
        except CacheError as error:  # read-only, no space left, locked: the rewrites are still answered
            self._warn(f"rewrite cache write failed (the rewrites are answered, not cached): {error}")
            return {}

    def _warn(self, message: str) -> None:
        """A cache failure logged as a warning once, then at debug level (one a batch would flood a run)."""
        logger.log(logging.DEBUG if message in self._warned else logging.WARNING, "%s", message)
        self._warned.add(message)

    def close(self) -> None:
        """Close the cache file and the inner backend."""
        self.store.close()
        self.inner.close()
