"""One call of a client stage (and of ``tsqr proxy``'s rewriting): where a search's query parts
are, the plans of its searches (``Job``), and the one rewriter call for them, bounded by a budget
(several samples per text query from one engine call). The sync and async clients are in
``searchclient.py``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core import Rewrite, Rewriter
from ..deadline import call_with_deadline, run_until
from ..errors import BackendTimeout
from .. import querydsl
from . import stage
from .stage import Plan, StageSettings, StatsKey


async def samples_within_budget(rewriter: Rewriter, texts: list[str], samples: int,
                                budget: float | None = None) -> list[list[Rewrite]]:
    """Each text's ``samples`` rewrites (``rewrite_samples``, one engine call; one sample is
    ``rewrite_batch``'s) in a worker thread, bounded by the rewriter's ``timeout`` (and the stage's
    ``budget``, whose deadline the thread carries for backends that stop early) from now: the wait
    for a free thread counts too (under load the rewriter's own deadline, which starts in the
    thread, let searches wait several budgets), and the budget waits for every sample. Past it, a
    BackendTimeout: the stage's fallback, or the strict error."""
    return await _bounded(rewriter, functools.partial(rewriter.rewrite_samples, texts, samples), budget)


def sampled_rows(rewriter: Rewriter, texts: list[str], samples: int, budget: float | None = None) -> list[list[Rewrite]]:
    """The synchronous :func:`samples_within_budget`: the rows, within ``budget`` seconds if given."""
    call = functools.partial(rewriter.rewrite_samples, texts, samples)
    return call() if budget is None else call_with_deadline(call, budget)


async def _bounded(rewriter: Rewriter, rewrite: Callable[[], Any], budget: float | None) -> Any:
    if budget:
        end = time.monotonic() + budget
        call = asyncio.to_thread(run_until, rewrite, end)
    else:
        call = asyncio.to_thread(rewrite)
    limits = [seconds for seconds in (rewriter.timeout, budget) if seconds]
    if not limits:
        return await call
    try:
        return await asyncio.wait_for(call, min(limits))
    except asyncio.TimeoutError:
        raise BackendTimeout(f"no rewrite within the budget of {min(limits):g} s (waiting included)") from None


def search_parts(body: Any) -> dict | None:
    """The parts of a search body that hold queries (``query``, ``retriever``), or None."""
    if not isinstance(body, dict):
        return None
    parts = {key: body[key] for key in querydsl.SEARCH_PARTS if isinstance(body.get(key), dict)}
    return parts or None


def parts_of(kwargs: dict) -> tuple[dict | None, Any]:
    """The query parts of a ``search(**kwargs)`` call (``body=`` or keyword style: ``query=``,
    ``retriever=``) and how to put new ones back."""
    body = kwargs.get("body")
    parts = search_parts(body)
    if parts is not None:
        return parts, lambda new: {**kwargs, "body": {**body, **new}}
    parts = search_parts(kwargs)
    if parts is not None:
        return parts, lambda new: {**kwargs, **new}
    return None, None


def single_index(index: Any) -> str | None:
    """The index ``_termvectors`` can ask, or None for several indices / patterns."""
    if isinstance(index, (list, tuple)) and len(index) == 1:
        index = index[0]
    if isinstance(index, str) and index and not any(ch in index for ch in ",*"):
        return index
    return None


@dataclass
class Job:
    """The searches of one call: a plan (or None: untouched) and the index of each, and how to
    rebuild the call's keyword arguments from the new queries."""

    plans: list[Plan | None]
    indexes: list[str | None]
    rebuild: Callable[[list[dict | None]], dict]
    single: bool  # search() answers one info dict, msearch() a list

    @property
    def texts(self) -> list[str]:
        return [text for plan in self.plans if plan for text in plan.texts]

    def assign(self, rewrites: list[Rewrite]) -> None:
        for plan, own in zip(self.plans, self.per_search(rewrites)):
            if plan:
                plan.rewrites = own

    def per_search(self, values: list) -> list[list]:
        """``values`` (one per text query of the call, as ``texts``) cut into each search's."""
        start, cut = 0, []
        for plan in self.plans:
            size = len(plan.leaves) if plan else 0
            cut.append(values[start:start + size])
            start += size
        return cut

    def stats_keys(self, settings: StageSettings) -> list[tuple[str | None, StatsKey]]:
        keys = {}
        for plan, index in zip(self.plans, self.indexes):
            if plan:
                for key in stage.stats_needed(plan, settings):
                    keys[(index, key)] = None
        return list(keys)

    def finish(self, settings: StageSettings, stats: dict) -> tuple[dict, Any]:
        queries, infos = [], []
        for plan, index in zip(self.plans, self.indexes):
            if plan is None:
                queries.append(None)
                infos.append({"rewritten": 0, "fallback": 0, "queries": []})
                continue
            own = {key: value for (where, key), value in stats.items() if where == index}
            query, info = stage.apply(plan, settings, own)
            queries.append(query)
            infos.append(info)
        return self.rebuild(queries), (infos[0] if self.single else infos)
