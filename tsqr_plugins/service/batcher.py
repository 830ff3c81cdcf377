"""Micro-batching: concurrent requests are gathered into rewriter batches, identical in-flight
queries share one generation, and finished completions go into the rewrite cache. A query asked
for ``n`` samples is one item whose future gets its ``n`` completions, sampled in one engine call
where the engine can (``Backend.generate_samples``)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tsqr_plugins.backends.base import Backend, Completion, n_per_query, one_per_query
from tsqr_plugins.backends.cache import sample_entries
from tsqr_plugins.cache import RewriteCache
from tsqr_plugins.errors import BackendTimeout
from tsqr_plugins.params import GenerationParams
from tsqr_plugins.prompts import Prompt
from tsqr_plugins.service.metrics import Metrics

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More queries are waiting than the service accepts; the client should retry later."""


class RequestTooLarge(Exception):
    """One request asks for more generations than the queue ever holds: a retry cannot help."""


@dataclass
class Pending:
    key: str  # in flight under it; a single rewrite's cache key too
    query: str
    prompt: Prompt
    params: GenerationParams
    future: asyncio.Future
    waiters: int = 1  # requests still waiting for it; none left while queued: it is dropped
    # n > 1 samples: each one's cache key (sample_keys); the future then gets a list of n completions
    sample_keys: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return len(self.sample_keys) or 1

    def failed(self, error: Exception) -> Completion | list[Completion]:
        """What its future gets when it has no completion: the error, for each sample."""
        return Completion.failed(error) if self.n == 1 else [Completion.failed(error)] * self.n


class MicroBatcher:
    """A batch holds what queued while the engine was busy, up to ``max_batch_size``, plus what
    arrives within ``max_wait`` seconds (0 by default: no added latency); ``concurrent_batches``
    batches run on the engine at once, in worker threads."""

    def __init__(
        self,
        backend: Backend,
        cache: RewriteCache | None,
        metrics: Metrics,
        max_batch_size: int = 32,
        max_wait: float = 0.0,
        max_queue: int = 1024,
        concurrent_batches: int = 1,
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self._in_flight: dict[str, Pending] = {}
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._generations = 0  # what the queue holds, counted in generations: a query with n samples is n
        self._slots = asyncio.Semaphore(concurrent_batches)
        self._executor = ThreadPoolExecutor(max_workers=concurrent_batches, thread_name_prefix="tsqr-engine")
        self._tasks: set[asyncio.Task] = set()
        self._runner: asyncio.Task | None = None

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Finish queued and running batches, then stop."""
        while not self._queue.empty() or self._tasks:
            await asyncio.sleep(0.01)
        if self._runner is not None:
            self._runner.cancel()
        self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, key: str, query: str, prompt: Prompt, params: GenerationParams,
               sample_keys: tuple[str, ...] = ()) -> asyncio.Future:
        """A future for the completion of ``query`` (with ``sample_keys``, n > 1 of them: a list of
        its ``n`` samples' completions); joins an identical query already in flight under ``key``."""
        existing = self._in_flight.get(key)
        if existing is not None:
            self.metrics.count("coalesced")
            existing.waiters += 1
            return existing.future
        if self._generations + max(len(sample_keys), 1) > self.max_queue:
            raise QueueFull(f"{self._generations} generations are waiting (limit {self.max_queue})")
        pending = Pending(key, query, prompt, params, asyncio.get_running_loop().create_future(),
                          sample_keys=tuple(sample_keys))
        self._in_flight[key] = pending
        self._generations += pending.n
        self._queue.put_nowait(pending)
        self.metrics.queue_depth = self._queue.qsize()
        return pending.future

    def submit_all(self, queries: dict[str, tuple]) -> dict[str, asyncio.Future]:
        """Futures for every ``key: (query, prompt, params[, sample_keys])`` of one request, or QueueFull before any
        is queued: admission is the whole request or nothing (a 429 left its earlier queries queued,
        generated for nobody ahead of live requests); RequestTooLarge when it could never fit."""
        new = sum(max(len(query[3]) if len(query) > 3 else 0, 1) for key, query in queries.items()
                  if key not in self._in_flight)  # those in flight are joined, not generated again
        if new > self.max_queue:
            raise RequestTooLarge(f"this request asks for {new} generations (a query with n samples counts n); "
                                  f"the service queues at most {self.max_queue} (--max-queue)")
        if new and self._generations + new > self.max_queue:
            raise QueueFull(f"{self._generations} generations are waiting and this request adds {new} "
                            f"(limit {self.max_queue}; a query with n samples counts n)")
        return {key: self.submit(key, *query) for key, query in queries.items()}

    def give_up(self, key: str) -> None:
        """A request stops waiting for ``key`` (its time budget is spent). A query nobody waits for
        any more is not generated if it is still queued: it would delay live requests for nothing.
        One already running finishes, and its answer is cached."""
        pending = self._in_flight.get(key)
        if pending is not None:
            pending.waiters -= 1

    def _take(self) -> Pending | None:
        """The next queued query someone still waits for (None when the queue is empty)."""
        while not self._queue.empty():
            item = self._got(self._queue.get_nowait())
            if self._live(item):
                return item
        return None

    def _got(self, item: Pending) -> Pending:
        """``item``, just taken from the queue: its generations no longer wait."""
        self._generations -= item.n
        return item

    def _live(self, item: Pending) -> bool:
        """Whether a request still waits for ``item``; one nobody waits for is resolved and dropped."""
        if item.waiters > 0:
            return True
        self.metrics.count("expired")
        self._resolve([item], [item.failed(BackendTimeout("every request for it had given up"))])
        return False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = self._got(await self._queue.get())
            # Wait for a free engine slot first: queries arriving meanwhile join this batch, so
            # batches grow under load while an idle engine answers a lone query at once.
            await self._slots.acquire()
            if not self._live(first):  # given up while it waited for the slot
                first = self._take()
                if first is None:  # every queued query was given up: the queue is empty, and so is the gauge
                    self.metrics.queue_depth = self._queue.qsize()
                    self._slots.release()
                    continue
            batch = [first]
            while len(batch) < self.max_batch_size and (item := self._take()) is not None:
                batch.append(item)
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch_size and (remaining := deadline - loop.time()) > 0:
                try:
                    item = self._got(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
                if self._live(item):
                    batch.append(item)
            self.metrics.queue_depth = self._queue.qsize()
            task = loop.create_task(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list[Pending]) -> None:
        """Every future of the batch is resolved on every path: one left pending would make each
        later request for its query wait for it until the time budget ends."""
        try:
            groups: dict[tuple[str, str, int], list[Pending]] = {}
            for item in batch:  # a backend call takes one prompt, one set of sampling parameters, one n
                groups.setdefault((item.prompt.id, item.params.key(), item.n), []).append(item)
            for items in groups.values():
                self.metrics.batch(len(items))
                try:
                    completions = await asyncio.get_running_loop().run_in_executor(self._executor, self._generate, items)
                except Exception as error:  # a bug past the engine call: these queries fall back, the next try afresh
                    logger.exception("batch of %d failed after the engine call", len(items))
                    completions = [item.failed(error) for item in items]
                self._resolve(items, completions)
        finally:
            abandoned = RuntimeError("the batch was abandoned (the service is stopping)")
            self._resolve(batch, [item.failed(abandoned) for item in batch])
            self._slots.release()

    def _resolve(self, items: list[Pending], completions: list) -> None:
        for item, completion in zip(items, completions):
            if self._in_flight.get(item.key) is item:
                del self._in_flight[item.key]
            if not item.future.done():
                item.future.set_result(completion)

    def _generate(self, items: list[Pending]) -> list:
        """Runs in a worker thread: the engine call, then one cache transaction for the batch (each
        sample under its index: the keying ``CachedBackend`` uses)."""
        prompt, params, n = items[0].prompt, items[0].params, items[0].n
        queries = [item.query for item in items]
        try:
            if n == 1:
                completions = one_per_query(self.backend.generate(queries, prompt, params), len(items), self.backend.NAME)
                rows = [[completion] for completion in completions]
            else:  # one engine call for every sample where the engine can (OpenAI's and vLLM's n)
                rows = n_per_query(self.backend.generate_samples(queries, prompt, params, n), len(items), n,
                                   self.backend.NAME)
                completions = rows
        except Exception as error:
            logger.warning("rewriter batch of %d failed: %s", len(items), error)
            self.metrics.count("rewriter_errors")
            return [item.failed(error) for item in items]
        if self.cache is None:
            return completions
        try:
            kept = self.cache.put_many(entry for item, row in zip(items, rows)
                                       for entry in sample_entries(item.sample_keys or (item.key,), prompt, params,
                                                                   item.query, row))
        except Exception as error:  # locked, full disk, text SQLite cannot store: still answered
            logger.warning("rewrite cache write of %d failed (the rewrites are answered, not cached): %s",
                           len(items), error)
            self.metrics.count("cache_errors")
            return completions
        if not kept:
            return completions
        # A sample stored meanwhile by another generation (another n, another process) is answered as
        # stored: every request, and every replay, gets the one text the cache keeps for it.
        rows = [[Completion(text=kept[key]) if key in kept else completion
                 for key, completion in zip(item.sample_keys or (item.key,), row)] for item, row in zip(items, rows)]
        return [row[0] for row in rows] if n == 1 else rows
