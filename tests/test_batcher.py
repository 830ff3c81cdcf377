"""The micro-batcher on its own (no HTTP, no event loop of a server): every future it hands out is
resolved on every path, and a query it no longer runs leaves the in-flight table, so a later
request for it is generated afresh instead of waiting on a dead future until its time budget ends."""

from __future__ import annotations

import asyncio
import threading

from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.params import GenerationParams
from tsqr_plugins.prompts import get_prompt
from tsqr_plugins.service.batcher import MicroBatcher
from tsqr_plugins.service.metrics import Metrics

PROMPT = get_prompt("tsqr-v1")
PARAMS = GenerationParams.preset("paper")


class HeldEngine(Backend):
    """Answers 'rw: <query>', each batch only once ``release`` is set (10 s at most)."""

    NAME = "held"
    model_id = "held"

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[str]] = []

    def generate(self, queries, prompt, params):
        self.batches.append(list(queries))
        self.started.set()
        self.release.wait(10)
        return [Completion(text=f"rw: {query}") for query in queries]


class MetricsFailingOnce(Metrics):
    """A bug in the batch's bookkeeping, before the engine is called: raises on the first batch."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def batch(self, size: int) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in the batch bookkeeping")
        super().batch(size)


def submit(batcher: MicroBatcher, *queries: str) -> dict[str, asyncio.Future]:
    return batcher.submit_all({query: (query, PROMPT, PARAMS) for query in queries})


def test_a_batch_cancelled_while_generating_answers_every_waiter():
    """The event loop's shutdown cancels every task, a running batch's included: each request
    waiting for one of its queries gets a failed completion at once (not at its time budget), and a
    later request for the query is generated afresh."""
    engine = HeldEngine()

    async def scenario():
        batcher = MicroBatcher(engine, None, Metrics(), max_batch_size=4)
        batcher.start()
        futures = submit(batcher, "a", "b")
        assert await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 10)
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()  # as asyncio.run does on its way out
        done, _ = await asyncio.wait(futures.values(), timeout=2)
        answers = {query: future.result() for query, future in futures.items() if future in done}
        engine.release.set()
        assert set(answers) == {"a", "b"}, "a waiter was left pending"

        batcher.start()  # a new runner: the cancelled batch gave its engine slot back
        again = submit(batcher, "a")["a"]
        fresh = await asyncio.wait_for(again, 10)
        await batcher.stop()
        return answers, again is futures["a"], fresh

    answers, joined_the_dead_one, fresh = asyncio.run(scenario())
    assert all(answer.text is None and "abandoned" in str(answer.error) for answer in answers.values())
    assert not joined_the_dead_one and fresh.text == "rw: a" and fresh.error is None
    assert engine.batches == [["a", "b"], ["a"]]


def test_a_bug_outside_the_engine_call_answers_every_waiter():
    """A batch that raises before its engine call (here its metrics): its waiters are answered
    with the failure, and the next request for the same query runs."""
    engine = HeldEngine()
    engine.release.set()

    async def scenario():
        batcher = MicroBatcher(engine, None, MetricsFailingOnce(), max_batch_size=4)
        batcher.start()
        futures = submit(batcher, "a", "b")
        done, _ = await asyncio.wait(futures.values(), timeout=2)
        answers = {query: future.result() for query, future in futures.items() if future in done}
        assert set(answers) == {"a", "b"}, "a waiter was left pending"
        again = submit(batcher, "a")["a"]
        fresh = await asyncio.wait_for(again, 10)
        await batcher.stop()
        return answers, fresh

    answers, fresh = asyncio.run(scenario())
    assert all(answer.text is None and answer.error is not None for answer in answers.values())
    assert fresh.text == "rw: a" and engine.batches == [["a"]]
