"""Several OpenAI-compatible upstreams (e.g. `vllm serve` replicas) behind one backend.

Each batch goes to one healthy replica, chosen least-busy (fewest batches in flight, ties in
turn) or round-robin. A replica whose requests fail to connect is marked down and the batch is
retried on the next one; a background thread re-checks every replica's ``/models`` every
``health_interval`` seconds and brings recovered ones back. All replicas must serve the same model
(the cache treats them as one engine).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, ServerUnavailableError
from ..params import GenerationParams
from ..prompts import Prompt
from .base import Backend, Completion
from .openai import OpenAIBackend

logger = logging.getLogger(__name__)
STRATEGIES = ("least-busy", "round-robin")


@dataclass
class Replica:
    url: str
    backend: OpenAIBackend | None = None
    healthy: bool = False
    in_flight: int = 0
    served: int = 0
    failures: int = 0
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def state(self) -> dict[str, Any]:
        return {"url": self.url, "healthy": self.healthy, "in_flight": self.in_flight, "served": self.served,
                "failures": self.failures, "last_error": self.last_error}


def _flat(completions: list) -> list[Completion]:
    """The completions of a batch, each query's samples in turn (``generate_samples`` answers a list per query)."""
    return [c for item in completions for c in (item if isinstance(item, list) else [item])]


def _unreachable(completions: list) -> bool:
    """Every item failed to reach the server (as opposed to the server answering badly)."""
    flat = _flat(completions)
    return bool(flat) and all(isinstance(c.error, ServerUnavailableError) for c in flat)


class ReplicaPool(Backend):
    """Several OpenAI-compatible servers of one model; each batch goes to one of them. Its cache is
    the model's: the same rewrites whichever replica answers, however many replicas there are.

    Args:
        base_urls: One API root per replica (usually ending in ``/v1``); repeats are dropped.
        model: The model every replica serves; None: the first one the first healthy replica lists.
        strategy: ``"least-busy"`` (fewest batches in flight, ties in turn) or ``"round-robin"``.
        health_interval: Seconds between background checks of every replica's ``/models``.
        startup_timeout: Seconds the last replica is given at construction when none answered yet
            (the others get 2 s each).
        **options: :class:`~tsqr_plugins.backends.openai.OpenAIBackend` options for every replica
            (``api_key``, ``max_concurrency``, ``timeout``...); ``max_retries`` defaults to 1 here,
            to fail over instead of retrying one replica.

    Raises:
        InputError: No URL, or an unknown ``strategy``.
        ServerUnavailableError: No replica answered (the message gives each one's error).
    """

    NAME = "replicas"
    EXTRA = "openai"
    REQUIRES = ("httpx",)

    def __init__(self, base_urls: Sequence[str], model: str | None = None, strategy: str = "least-busy",
                 health_interval: float = 5.0, startup_timeout: float = 30.0, **options: Any) -> None:
        if len(base_urls) < 1:
            raise InputError("a replica pool needs at least one upstream URL")
        if strategy not in STRATEGIES:
            raise InputError(f"unknown upstream strategy {strategy!r}; choose one of {list(STRATEGIES)}")
        self.strategy = strategy
        self.options = {"max_retries": 1, **options}  # fail over quickly instead of retrying one replica
        self.model = model
        self.replicas = [Replica(url.rstrip("/")) for url in dict.fromkeys(base_urls)]
        self._turn = itertools.count()
        self._choose_lock = threading.Lock()
        for replica in self.replicas:
            self._connect(replica, timeout=startup_timeout if replica is self.replicas[-1] and not self.healthy() else 2.0)
        if not self.healthy():
            raise ServerUnavailableError("no upstream answered: " + "; ".join(f"{r.url}: {r.last_error}" for r in self.replicas))
        self.model_id = str(self.model)
        self._stop = threading.Event()
        self._checker = threading.Thread(target=self._check_loop, args=(health_interval,), daemon=True)
        self._checker.start()

    # -- health ----------------------------------------------------------------------------

    def healthy(self) -> list[Replica]:
        """The replicas that passed their latest health check."""
        return [r for r in self.replicas if r.healthy]

    def _connect(self, replica: Replica, timeout: float) -> None:
        try:
            if replica.backend is None:
                replica.backend = OpenAIBackend(replica.url, model=self.model, health_timeout=timeout, **self.options)
                self.model = self.model or replica.backend.model
            served = replica.backend.check_server(timeout)
            if served and self.model not in served:
                raise ServerUnavailableError(f"serves {served}, not {self.model!r}")
        except Exception as error:  # down or wrong model: kept out until a check passes
            replica.healthy, replica.last_error = False, f"{type(error).__name__}: {error}"[:300]
            return
        if not replica.healthy:
            logger.info("upstream %s is healthy", replica.url)
        replica.healthy, replica.last_error = True, ""

    def _check_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            for replica in self.replicas:
                self._connect(replica, timeout=2.0)

    def states(self) -> list[dict[str, Any]]:
        """Each replica's URL, health, batches in flight and served, failures and last error."""
        return [replica.state() for replica in self.replicas]

    # -- routing ---------------------------------------------------------------------------

    def _choose(self, exclude: set[str]) -> Replica | None:
        with self._choose_lock:
            candidates = [r for r in self.healthy() if r.url not in exclude]
            if not candidates:
                return None
            turn = next(self._turn)
            order = candidates[turn % len(candidates):] + candidates[:turn % len(candidates)]
            chosen = order[0] if self.strategy == "round-robin" else min(order, key=lambda r: r.in_flight)
            chosen.in_flight += 1
            return chosen

    def _route(self, call) -> list:
        tried: set[str] = set()
        last: list[Completion] | None = None
        while True:
            replica = self._choose(tried)
            if replica is None:
                if last is not None:
                    return last
                raise ServerUnavailableError("every upstream is down: " + "; ".join(
                    f"{r.url}: {r.last_error or 'down'}" for r in self.replicas))
            tried.add(replica.url)
            try:
                completions = call(replica.backend)
            finally:
                with self._choose_lock:
                    replica.in_flight -= 1
            if not _unreachable(completions):
                replica.served += 1
                return completions
            replica.healthy, replica.failures = False, replica.failures + 1
            replica.last_error = str(_flat(completions)[0].error)[:300]
            logger.warning("upstream %s is unreachable; trying another (%s)", replica.url, replica.last_error)
            last = completions

    def generate(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams) -> list[Completion]:
        return self._route(lambda backend: backend.generate(queries, prompt, params))

    def generate_samples(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams,
                         n: int) -> list[list[Completion]]:
        """``n`` completions per query from one replica, each query one request with OpenAI's ``n``
        (failing over as ``generate`` does).

        Args:
            queries: The search queries, each put into ``prompt``.
            prompt: The prompt that turns a query into chat messages.
            params: How to sample.
            n: Completions per query, >= 1.
        """
        return self._route(lambda backend: backend.generate_samples(queries, prompt, params, n))

    def chat(self, conversations: Sequence[list[dict[str, str]]], params: GenerationParams) -> list[Completion]:
        return self._route(lambda backend: backend.chat(conversations, params))

    def close(self) -> None:
        """Stop the health checks and close every replica's connections."""
        self._stop.set()
        for replica in self.replicas:
            if replica.backend is not None:
                replica.backend.close()

