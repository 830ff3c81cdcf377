"""Ways to combine the original query with its rewrite, chosen by the caller."""

from __future__ import annotations

from tsqr_plugins.errors import InputError

MODES = ("replace", "concat", "adaptive", "both")
DEFAULT_REPEAT = 5  # query2doc repeats the original five times for BM25
# adaptive: the original's copies make about a third as many words as the rewrite (ThinkQE, after
# MuGI's adaptive repetition), so a long rewrite does not drown a short question; bounded
ADAPTIVE_RATIO = 3
ADAPTIVE_MAX_COPIES = 100


def adaptive_copies(original: str, rewrite: str, ratio: float = ADAPTIVE_RATIO) -> int:
    """How many copies of ``original`` make about ``1 / ratio`` of the rewrite's words: at least one,
    at most ADAPTIVE_MAX_COPIES."""
    words = max(len(original.split()), 1)
    return min(max(1, round(len(rewrite.split()) / (ratio * words))), ADAPTIVE_MAX_COPIES)


def combine(original: str, rewrite: str, mode: str = "replace", repeat: int = DEFAULT_REPEAT) -> str | tuple[str, str]:
    """The original query and its rewrite combined into what is searched.

    Args:
        original: The caller's query.
        rewrite: Its rewrite.
        mode: ``"replace"``: the rewrite alone (the paper). ``"concat"``: the original ``repeat``
            times, then the rewrite (query2doc style). ``"adaptive"``: as concat, with as many
            copies as :func:`adaptive_copies` gives. ``"both"``: the pair, for the host to fuse.
        repeat: ``concat`` only: how many times the original is repeated (default 5, as query2doc
            does for BM25).

    Returns:
        A string, or ``(original, rewrite)`` for ``both``.

    Raises:
        InputError: An unknown mode, or ``repeat`` below 1 with ``concat``.
    """
    if mode == "replace":
        return rewrite
    if mode == "concat":
        if repeat < 1:
            raise InputError(f"concat needs repeat >= 1, got {repeat}")
        return " ".join([original] * repeat + [rewrite])
    if mode == "adaptive":
        return " ".join([original] * adaptive_copies(original, rewrite) + [rewrite])
    if mode == "both":
        return (original, rewrite)
    raise InputError(f"unknown combine mode {mode!r}; choose one of {list(MODES)}")


def combine_text(original: str, rewrite: str, mode: str = "replace", repeat: int = DEFAULT_REPEAT) -> str:
    """One query string for hosts that take a single text: :func:`combine`, but ``both`` (a pair,
    for fusion) gives the rewrite.

    Args:
        original: The caller's query.
        rewrite: Its rewrite.
        mode: ``"replace"``, ``"concat"`` or ``"both"``.
        repeat: ``concat`` only: how many times the original is repeated (default 5).
    """
    combined = combine(original, rewrite, mode, repeat)
    return combined if isinstance(combined, str) else rewrite
