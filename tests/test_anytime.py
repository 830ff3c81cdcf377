"""tsqr_plugins.anytime: the original's search runs while the rewrite is made, the rewrite is
waited for only until the budget (the adapters' own tests check their hosts)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tsqr_plugins import anytime
from tsqr_plugins.errors import InputError


def slow(value, delay: float):
    def call():
        time.sleep(delay)
        return value
    return call


def test_the_search_runs_in_the_callers_thread_while_the_rewrite_is_made():
    threads = {}

    def search():
        threads["search"] = threading.current_thread()
        time.sleep(0.3)
        return "hits"

    started = time.monotonic()
    first, rewritten, info = anytime.search_while_rewriting(slow("rewrite", 0.3), search, budget=2.0)
    assert (first, rewritten) == ("hits", "rewrite") and info.rewrite_in_time is True
    assert threads["search"] is threading.current_thread()
    assert time.monotonic() - started < 0.55  # side by side, not 0.3 + 0.3


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_late_rewrite_is_not_waited_for_and_errors_within_the_budget_are_raised(asynchronous):
    async def asearch():
        return "hits"

    def run(rewrite, budget):
        if asynchronous:
            return asyncio.run(anytime.asearch_while_rewriting(rewrite, asearch(), budget))
        return anytime.search_while_rewriting(rewrite, lambda: "hits", budget)

    started = time.monotonic()
    first, rewritten, info = run(slow("rewrite", 2.0), 0.2)
    assert time.monotonic() - started < 0.2 + 0.5
    assert (first, rewritten, info.rewrite_in_time, info.budget) == ("hits", None, False, 0.2)

    def broken():
        raise ConnectionError("the model server is down")

    with pytest.raises(ConnectionError):
        run(broken, 1.0)


def test_budget_is_checked():
    assert anytime.check_budget(None, fusing=False) is None
    assert anytime.check_budget(1, fusing=True) == 1.0
    for bad in (0, -1, float("inf"), True, "1"):
        with pytest.raises(InputError, match="positive"):
            anytime.check_budget(bad, fusing=True)
    with pytest.raises(InputError, match="mode='rrf'"):
        anytime.check_budget(1.0, fusing=False)


@pytest.mark.parametrize("budget", [1e10, 1e300])
def test_a_budget_longer_than_a_thread_can_wait_is_waited_as_the_longest_wait(budget):
    """A budget is any finite positive number of seconds (check_budget takes 1e10 and 1e300, "no
    hurry"): waiting for it never raises OverflowError from threading (past threading.TIMEOUT_MAX)."""
    from tsqr_plugins import deadline

    assert anytime.check_budget(budget, fusing=True) == budget
    first, rewritten, info = anytime.search_while_rewriting(slow("rewrite", 0.05), lambda: "hits", budget)
    assert (first, rewritten, info.rewrite_in_time) == ("hits", "rewrite", True)
    assert asyncio.run(anytime.asearch_while_rewriting(slow("rewrite", 0.05), asyncio.sleep(0, "hits"), budget))[1] == "rewrite"
    assert deadline.call_with_deadline(slow("done", 0.05), budget) == "done"
