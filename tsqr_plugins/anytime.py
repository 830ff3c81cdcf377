"""Anytime rewriting for the hosts that search in Python (Pyserini, LlamaIndex): the search with
the original query runs at once, in the caller's thread, while the rewrite is made in a worker
thread; the rewrite is waited for only until the budget is spent. A late rewrite is not waited for
(it runs on in its thread, so a cache behind the rewriter has it next time); the caller then
answers with the original's list. The Elasticsearch/OpenSearch client stages do the same with
their own I/O (``adapters/searchclient.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

from . import deadline
from .core import Rewrite, Rewriter
from .errors import BackendTimeout, InputError

S = TypeVar("S")
R = TypeVar("R")


@dataclass(frozen=True)
class Anytime:
    """What an anytime search did: its ``budget`` (seconds), whether the rewrite came within it,
    and how long the caller waited for the rewrite, the original's search included."""

    budget: float
    rewrite_in_time: bool
    waited: float

    def as_dict(self) -> dict:
        """The fields as a dict (the client stages' ``tsqr.anytime`` metadata has the same)."""
        return asdict(self)


def check_budget(budget: float | None, fusing: bool) -> float | None:
    """``budget`` as given, or InputError: it must be positive and comes with fusion (without a
    second list, a late rewrite has nothing to add to the original's)."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < float("inf"):
        raise InputError(f"budget must be a positive number of seconds, got {budget!r}")
    if not fusing:
        raise InputError("budget (anytime rewriting) needs mode='rrf': the original's list is the answer "
                         "when the rewrite is late")
    return float(budget)


def late(rewriter: Rewriter, queries: list[str], budget: float) -> list[Rewrite]:
    """The fallbacks of rewrites that missed the budget; a strict rewriter raises instead.

    Raises:
        BackendTimeout: The rewriter is strict.
    """
    reason = f"no rewrite within the budget of {budget:g} s"
    if rewriter.strict:
        raise BackendTimeout(reason)
    return [Rewrite(original=query, text=query, fallback=True, reason=f"BackendTimeout: {reason}",
                    model=rewriter.backend.model_id, prompt_id=rewriter.prompt.id) for query in queries]


def search_while_rewriting(rewrite: Callable[[], R], search: Callable[[], S],
                           budget: float) -> tuple[S, R | None, Anytime]:
    """``search()`` at once while ``rewrite()`` runs in a worker thread with ``budget`` as its
    deadline (backends that can stop early see it).

    Returns:
        The search's result, the rewrite's (None: late) and what was done.
    """
    started = time.monotonic()
    pending = deadline.start(rewrite, budget)
    first = search()
    rewritten = _in_time(pending)
    return first, rewritten, Anytime(budget, rewritten is not None, round(time.monotonic() - started, 3))


async def asearch_while_rewriting(rewrite: Callable[[], R], search: Awaitable[S],
                                  budget: float) -> tuple[S, R | None, Anytime]:
    """The async form: ``search`` awaited while ``rewrite()`` runs in a worker thread (its own,
    not the loop's executor: a late rewrite holds no executor thread, nor ``asyncio.run``'s exit)."""
    started = time.monotonic()
    pending = deadline.start(rewrite, budget)
    first = await search
    rewritten = await asyncio.to_thread(_in_time, pending)  # waits at most until the deadline
    return first, rewritten, Anytime(budget, rewritten is not None, round(time.monotonic() - started, 3))


def _in_time(pending: deadline.Started[R]) -> R | None:
    """The rewrite's outcome, None when it missed the budget (its errors within it are raised)."""
    try:
        return pending.result()
    except BackendTimeout:
        if time.monotonic() < pending.deadline:  # the rewriter's own timeout, not the budget
            raise
        return None
