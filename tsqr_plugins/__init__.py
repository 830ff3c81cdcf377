"""tsqr: TongSearch-QR reasoning query rewriting for the search stacks people already run.

Importing this package is cheap: heavy libraries load inside the backend or adapter that needs them.
Start with :class:`Rewriter` over a backend from :func:`load_backend` (docs/python-api.md).

The registries, each keyed by the name the API and the CLI take:

- ``BACKENDS``: backend name -> ``"module:Class"``, imported on use (see :func:`load_backend`).
- ``PROMPTS``: prompt id -> :class:`Prompt` (``"tsqr-v1"``, the paper's, is the default).
- ``PRESETS``: sampling preset -> :class:`GenerationParams` (``"paper"``, ``"greedy"``).
- ``MODES``: the ways to combine a query with its rewrite (``replace``, ``concat``, ``both``).
"""

from tsqr_plugins.backends import BACKENDS, Backend, Completion, load_backend, with_cache
from tsqr_plugins.combine import MODES, combine
from tsqr_plugins.core import Rewrite, Rewriter
from tsqr_plugins.errors import (
    BackendError,
    CacheError,
    CacheMismatchError,
    EmptyQueryError,
    InputError,
    MissingDependencyError,
    MissingRewriteError,
    TSQRError,
)
from tsqr_plugins.params import PRESETS, GenerationParams
from tsqr_plugins.prompts import PROMPTS, Prompt, build_messages, get_prompt, parse_completion

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "MODES",
    "PRESETS",
    "PROMPTS",
    "Backend",
    "BackendError",
    "CacheError",
    "CacheMismatchError",
    "Completion",
    "EmptyQueryError",
    "GenerationParams",
    "InputError",
    "MissingDependencyError",
    "MissingRewriteError",
    "Prompt",
    "Rewrite",
    "Rewriter",
    "TSQRError",
    "build_messages",
    "combine",
    "get_prompt",
    "load_backend",
    "parse_completion",
    "with_cache",
]
