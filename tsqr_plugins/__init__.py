"""tsqr: TongSearch-QR reasoning query rewriting for the search stacks people already run.

Importing this package is cheap: heavy libraries load inside the backend or adapter that needs them.
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
