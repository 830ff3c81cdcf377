"""Exceptions raised by tsqr. Each message says what went wrong and what would work."""


class TSQRError(Exception):
    """Base class for every error tsqr raises on purpose."""


class InputError(TSQRError, ValueError):
    """The caller's input is wrong (empty query, malformed file, unknown option).

    Never turned into a fallback: fail-open covers backend failures, not caller mistakes.
    """


class EmptyQueryError(InputError):
    """A query is empty or whitespace only."""


class MissingRewriteError(InputError):
    """A query has no rewrite in a rewrite file."""


class MissingDependencyError(TSQRError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class BackendError(TSQRError, RuntimeError):
    """An inference backend failed: unreachable server, generation error, timeout."""


class BackendTimeout(BackendError):
    """A backend did not answer within its time budget."""


class ServerUnavailableError(BackendError):
    """An inference server did not answer its health check."""


class UnparseableCompletion(BackendError):
    """The model's output could not be parsed (empty, or no <answer> in think mode)."""


class CacheError(TSQRError):
    """The rewrite cache cannot be opened, read or written; the message names the file and the
    cause (read-only, no space left, damaged)."""


class CacheMismatchError(CacheError):
    """A rewrite cache holds rewrites made by another backend or model, or is no tsqr cache."""
