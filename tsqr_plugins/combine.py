"""Ways to combine the original query with its rewrite, chosen by the caller."""

from __future__ import annotations

from tsqr_plugins.errors import InputError

MODES = ("replace", "concat", "both")
DEFAULT_REPEAT = 5  # query2doc repeats the original five times for BM25


def combine(original: str, rewrite: str, mode: str = "replace", repeat: int = DEFAULT_REPEAT) -> str | tuple[str, str]:
    """``replace``: the rewrite alone (the paper). ``concat``: the original ``repeat`` times,
    then the rewrite (query2doc style). ``both``: ``(original, rewrite)`` for fusion by the host.
    """
    if mode == "replace":
        return rewrite
    if mode == "concat":
        if repeat < 1:
            raise InputError(f"concat needs repeat >= 1, got {repeat}")
        return " ".join([original] * repeat + [rewrite])
    if mode == "both":
        return (original, rewrite)
    raise InputError(f"unknown combine mode {mode!r}; choose one of {list(MODES)}")


def combine_text(original: str, rewrite: str, mode: str = "replace", repeat: int = DEFAULT_REPEAT) -> str:
    """One query string for hosts that take a single text: ``both`` (a pair, for fusion) gives the rewrite."""
    combined = combine(original, rewrite, mode, repeat)
    return combined if isinstance(combined, str) else rewrite
