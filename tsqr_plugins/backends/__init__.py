"""Inference backends, resolved by name on use so that nothing heavy is imported early."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.errors import InputError

BACKENDS: dict[str, str] = {
    "transformers": "tsqr_plugins.backends.transformers:TransformersBackend",
    "vllm": "tsqr_plugins.backends.vllm:VLLMBackend",
    # vLLM's async engine: concurrent batches interleave (tsqr serve); the same rewrites as "vllm"
    "vllm-async": "tsqr_plugins.backends.vllm:AsyncVLLMBackend",
    "openai": "tsqr_plugins.backends.openai:OpenAIBackend",
    # several OpenAI-compatible servers of one model, batches spread over them (tsqr serve)
    "replicas": "tsqr_plugins.backends.replicas:ReplicaPool",
    "file": "tsqr_plugins.backends.file:FileBackend",
}

__all__ = ["BACKENDS", "Backend", "Completion", "backend_class", "load_backend", "with_cache"]


def backend_class(name: str) -> type[Backend]:
    """The class registered under ``name`` in ``BACKENDS``, its module imported now.

    Args:
        name: A registered backend name, e.g. ``"openai"``.

    Raises:
        InputError: ``name`` is not registered (the message lists the valid ones).
    """
    try:
        module_name, class_name = BACKENDS[name].split(":")
    except KeyError:
        raise InputError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def load_backend(spec: str, **options: Any) -> Backend:
    """Build the backend that ``spec`` names, with its options.

    The registered names (``BACKENDS``) and their main options; each class documents them all:

    - ``transformers`` (:class:`~tsqr_plugins.backends.transformers.TransformersBackend`): ``model``
      (required), ``device``, ``dtype``, ``batch_size``, ``trust_remote_code``.
    - ``vllm`` (:class:`~tsqr_plugins.backends.vllm.VLLMBackend`): ``model`` (required), ``dtype``,
      ``max_model_len``, ``gpu_memory_utilization``, ``tensor_parallel_size``, any ``vllm.LLM`` keyword.
    - ``vllm-async`` (:class:`~tsqr_plugins.backends.vllm.AsyncVLLMBackend`): as ``vllm``, on vLLM's
      async engine (concurrent batches interleave).
    - ``openai`` (:class:`~tsqr_plugins.backends.openai.OpenAIBackend`): ``base_url``, ``model``,
      ``api_key``, ``max_concurrency``, ``timeout``, ``max_retries``, ``vllm_sampling``.
    - ``replicas`` (:class:`~tsqr_plugins.backends.replicas.ReplicaPool`): ``base_urls`` (required),
      ``model``, ``strategy``, ``health_interval``, and the ``openai`` options.
    - ``file`` (:class:`~tsqr_plugins.backends.file.FileBackend`): the path in the spec
      (``file:<path>``), ``on_missing``.

    A backend whose dependency is missing raises MissingDependencyError naming the extra to install.

    Args:
        spec: A registered name, or ``file:<path>`` for a rewrite file.
        **options: Keyword arguments of that backend's class.

    Raises:
        InputError: An unknown name, ``file`` without a path, or a ``:`` argument for another backend.
    """
    name, _, argument = spec.partition(":")
    if name == "file":
        if not argument:
            raise InputError("the file backend needs a path: file:<rewrites.json>")
        options.setdefault("path", Path(argument))
    elif argument:
        raise InputError(f"backend {name!r} takes no ':' argument (got {spec!r})")
    return backend_class(name)(**options)


def with_cache(backend: Backend, path: str | Path | None = None) -> Backend:
    """``backend`` wrapped in the persistent rewrite cache (a ``CachedBackend``); a backend whose
    answers are already persistent (``file``) is returned as it is.

    Args:
        backend: The backend whose misses generate the rewrites.
        path: The SQLite file; None: one per backend and model under ``$TSQR_CACHE_DIR``, else
            ``$XDG_CACHE_HOME/tsqr``, else ``~/.cache/tsqr``.

    Raises:
        CacheMismatchError: The file holds another backend's or model's rewrites, or is no tsqr cache.
        CacheError: The file cannot be created or opened.
    """
    if not backend.CACHEABLE:
        return backend
    from tsqr_plugins.backends.cache import CachedBackend

    return CachedBackend(backend, path)
