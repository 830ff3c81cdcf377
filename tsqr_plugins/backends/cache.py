"""A backend wrapper that answers from the persistent rewrite cache and stores what it generates."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from tsqr_plugins.backends.base import Backend, Completion, cacheable
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


class CachedBackend(Backend):
    """Hits come from SQLite; misses go to ``inner`` and successful answers (``cacheable``) are stored."""

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
        try:
            self.store.put_many(
                (keys[index], prompt.id, params_key, queries[index], completion.text)
                for index, completion in zip(misses, fresh)
                if cacheable(completion, prompt)
            )
        except CacheError as error:  # read-only, no space left, locked: the rewrites are still answered
            self._warn(f"rewrite cache write failed (the rewrites are answered, not cached): {error}")
        results = [Completion(text=hits[key], cached=True) if key in hits else None for key in keys]
        for index, completion in zip(misses, fresh):
            results[index] = completion
        return results  # type: ignore[return-value]

    def _warn(self, message: str) -> None:
        """A cache failure logged as a warning once, then at debug level (one a batch would flood a run)."""
        logger.log(logging.DEBUG if message in self._warned else logging.WARNING, "%s", message)
        self._warned.add(message)

    def close(self) -> None:
        self.store.close()
        self.inner.close()
