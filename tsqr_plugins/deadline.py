"""Run a call with a time budget, for fail-open rewriting.

The call runs in a worker thread. Python cannot stop a thread, so the worker carries its
deadline (``expired()`` reads it) and backends that can stop early check it: the transformers
backend ends generation at the deadline instead of running on, abandoned, until the process exits
under it (which aborts the interpreter: "terminate called without an active exception").
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from tsqr_plugins.errors import BackendTimeout

T = TypeVar("T")
EXIT_GRACE_S = 30.0  # how long the process waits at exit for abandoned workers to notice their deadline

_local = threading.local()
_abandoned: set[threading.Thread] = set()


def current() -> float | None:
    """The current thread's deadline (a ``time.monotonic()`` value), to hand to helper threads."""
    return getattr(_local, "deadline", None)


def remaining() -> float | None:
    """Seconds left to the current thread's call (None: no time budget)."""
    deadline = current()
    return None if deadline is None else deadline - time.monotonic()


def expired() -> bool:
    """Whether the current thread runs a call whose time budget is spent."""
    left = remaining()
    return left is not None and left <= 0


def run_until(function: Callable[[], T], deadline: float | None) -> T:
    """``function()`` in this thread with ``deadline`` (a ``time.monotonic()`` value, or None) as its
    budget, for a caller that waits in its own way (the service's event loop, a thread pool);
    backends check ``expired()``."""
    previous = current()
    _local.deadline = deadline
    try:
        return function()
    finally:
        _local.deadline = previous


class Started(Generic[T]):
    """A call running in a worker thread with a time budget (:func:`start`): the caller does
    something else meanwhile (anytime rewriting searches with the original), then takes the
    outcome with :meth:`result`, waiting at most until the deadline."""

    def __init__(self, function: Callable[[], T], seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self._outcome: dict[str, object] = {}
        self._worker = threading.Thread(target=self._run, args=(function,), name="tsqr-deadline", daemon=True)
        self._worker.start()

    def _run(self, function: Callable[[], T]) -> None:
        _local.deadline = self.deadline
        try:
            value = function()
            if expired():  # stopped at the deadline: a cut-short answer is no answer
                raise BackendTimeout(f"the backend did not answer within the time budget of {self.seconds:g} s")
            self._outcome["value"] = value
        except BaseException as error:  # handed to the caller's thread in result()
            self._outcome["error"] = error
        finally:
            _abandoned.discard(threading.current_thread())

    def result(self) -> T:
        """The call's value (or its error), or BackendTimeout once the deadline has passed."""
        # a budget past what a lock can wait (threading.TIMEOUT_MAX, ~292 years) waits that long
        self._worker.join(min(max(0.0, self.deadline - time.monotonic()), threading.TIMEOUT_MAX))
        if self._worker.is_alive():
            _abandoned.add(self._worker)
            raise BackendTimeout(f"the backend did not answer within the time budget of {self.seconds:g} s")
        if "error" in self._outcome:
            raise self._outcome["error"]  # type: ignore[misc]
        return self._outcome["value"]  # type: ignore[return-value]


def start(function: Callable[[], T], seconds: float) -> Started[T]:
    """Start ``function()`` in a worker thread with ``seconds`` as its budget; see :class:`Started`."""
    return Started(function, seconds)


def call_with_deadline(function: Callable[[], T], seconds: float | None) -> T:
    """Return ``function()``, or raise BackendTimeout after ``seconds``. ``seconds=None`` calls directly."""
    if seconds is None:
        return function()
    return start(function, seconds).result()


@atexit.register
def _wait_for_abandoned_workers() -> None:
    end = time.monotonic() + EXIT_GRACE_S
    for worker in list(_abandoned):
        worker.join(max(0.0, end - time.monotonic()))
