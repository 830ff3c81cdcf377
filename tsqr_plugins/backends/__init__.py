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
    """The class registered under ``name``; an unknown name lists the valid ones."""
    try:
        module_name, class_name = BACKENDS[name].split(":")
    except KeyError:
        raise InputError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def load_backend(spec: str, **options: Any) -> Backend:
    """Build a backend from ``name`` or ``file:<path>`` plus its keyword options."""
    name, _, argument = spec.partition(":")
    if name == "file":
        if not argument:
            raise InputError("the file backend needs a path: file:<rewrites.json>")
        options.setdefault("path", Path(argument))
    elif argument:
        raise InputError(f"backend {name!r} takes no ':' argument (got {spec!r})")
    return backend_class(name)(**options)


def with_cache(backend: Backend, path: str | Path | None = None) -> Backend:
    """``backend`` wrapped in the persistent rewrite cache, unless it is already persistent."""
    if not backend.CACHEABLE:
        return backend
    from tsqr_plugins.backends.cache import CachedBackend

    return CachedBackend(backend, path)
