"""Run a call with a time budget, for fail-open rewriting."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from tsqr_plugins.errors import BackendTimeout

T = TypeVar("T")


def call_with_deadline(function: Callable[[], T], seconds: float | None) -> T:
    """Return ``function()``, or raise BackendTimeout after ``seconds``.

    The call runs in a daemon thread; Python cannot stop it, so a timed-out generation finishes in
    the background and its result is dropped. ``seconds=None`` calls directly.
    """
    if seconds is None:
        return function()
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the caller's thread below
            outcome["error"] = error

    worker = threading.Thread(target=target, name="tsqr-deadline", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise BackendTimeout(f"the backend did not answer within the time budget of {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
