"""The micro-batcher on its own (no HTTP): batches, coalescing, admission, giving up, the cache, and
every future it hands out resolved on every path, so that a later request for a query is generated
afresh instead of waiting on a dead future until its time budget ends.

Each scenario runs in ``asyncio.run`` under a deadline, so a batcher that loses a query fails the
test instead of hanging it; the engine runs in the batcher's worker thread as in ``tsqr serve``.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.cache import RewriteCache
from tsqr_plugins.errors import BackendError, BackendTimeout, CacheError
from tsqr_plugins.params import GenerationParams
from tsqr_plugins.prompts import get_prompt
from tsqr_plugins.service.batcher import MicroBatcher, Pending, QueueFull, RequestTooLarge
from tsqr_plugins.service.metrics import Metrics

PROMPT = get_prompt("tsqr-v1")
PARAMS = GenerationParams.preset("paper")
SCENARIO_DEADLINE = 20


class RecordingEngine(Backend):
    """Answers 'rw: <query>' (or what ``answer`` makes of a batch), recording each call; while
    ``release`` is clear a call waits for it (10 s at most)."""

    NAME = "recording"
    model_id = "recording"

    def __init__(self, held: bool = False, answer=None) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        if not held:
            self.release.set()
        self.answer = answer or (lambda queries: [Completion(text=f"rw: {query}") for query in queries])
        self.calls: list[tuple[list[str], str, str, str]] = []  # queries, prompt id, params key, thread

    def generate(self, queries, prompt, params):
        self.calls.append((list(queries), prompt.id, params.key(), threading.current_thread().name))
        self.started.set()
        self.release.wait(10)
        return self.answer(list(queries))

    @property
    def batches(self) -> list[list[str]]:
        return [call[0] for call in self.calls]


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


class UnwritableCache(RewriteCache):
    """A cache whose writes fail, as on a full disk."""

    def put_many(self, entries) -> None:
        list(entries)
        raise CacheError("database or disk is full")


def submit(batcher: MicroBatcher, *queries: str, prompt=PROMPT, params=PARAMS) -> dict[str, asyncio.Future]:
    return batcher.submit_all({query: (query, prompt, params) for query in queries})


async def engine_busy(batcher: MicroBatcher, engine: RecordingEngine) -> asyncio.Future:
    """A query the (held) engine is working on: what comes next queues behind it."""
    busy = submit(batcher, "busy")["busy"]
    assert await asyncio.to_thread(engine.started.wait, 10), "the engine never started"
    return busy


async def answers(futures, timeout: float = 5) -> dict[str, Completion]:
    return {key: await asyncio.wait_for(future, timeout) for key, future in futures.items()}


def run(scenario):
    return asyncio.run(asyncio.wait_for(scenario(), SCENARIO_DEADLINE))


def test_a_query_every_request_gave_up_on_is_not_generated():
    """Identical queries in flight share one generation; one that every request for it gave up on
    while queued is answered as given up and dropped, one that a request still waits for is run."""
    engine, metrics = RecordingEngine(held=True), Metrics()

    async def scenario():
        batcher = MicroBatcher(engine, None, metrics, max_batch_size=8)
        batcher.start()
        await engine_busy(batcher, engine)
        first, second = submit(batcher, "gone", "kept"), submit(batcher, "gone", "kept")
        assert second == first and metrics.counters["coalesced"] == 2 and batcher.depth == 2
        batcher.give_up("gone")
        batcher.give_up("gone")
        batcher.give_up("kept")  # the other request for it still waits
        engine.release.set()
        result = await answers(first)
        await batcher.stop()
        return result

    result = run(scenario)
    assert result["kept"].text == "rw: kept"
    assert result["gone"].text is None and isinstance(result["gone"].error, BackendTimeout)
    assert engine.batches == [["busy"], ["kept"]] and metrics.counters["expired"] == 1


def test_the_batcher_keeps_running_after_dropping_a_query_nobody_waits_for():
    engine = RecordingEngine(held=True)

    async def scenario():
        batcher = MicroBatcher(engine, None, Metrics())
        batcher.start()
        await engine_busy(batcher, engine)
        dropped = submit(batcher, "dropped")
        batcher.give_up("dropped")  # nothing else queued behind it
        engine.release.set()
        await answers(dropped)
        later = await answers(submit(batcher, "later"))
        await batcher.stop()
        return later

    assert run(scenario)["later"].text == "rw: later"
    assert engine.batches == [["busy"], ["later"]]


def test_queries_queued_while_the_engine_is_busy_form_batches_of_at_most_max_batch_size():
    engine, metrics = RecordingEngine(held=True), Metrics()

    async def scenario():
        batcher = MicroBatcher(engine, None, metrics, max_batch_size=3)
        batcher.start()
        await engine_busy(batcher, engine)
        futures = submit(batcher, "q1", "q2", "q3", "q4", "q5")
        queued = (batcher.depth, metrics.queue_depth)
        engine.release.set()
        result = await answers(futures)
        await batcher.stop()
        return queued, result

    queued, result = run(scenario)
    assert queued == (5, 5)
    assert [answer.text for answer in result.values()] == [f"rw: q{i}" for i in range(1, 6)]
    assert engine.batches == [["busy"], ["q1", "q2", "q3"], ["q4", "q5"]]
    assert metrics.queue_depth == 0 and metrics.batch_size.count == 3


def test_max_wait_gathers_what_arrives_within_it_and_a_full_batch_does_not_wait():
    gathering = RecordingEngine()

    async def gathered():
        batcher = MicroBatcher(gathering, None, Metrics(), max_batch_size=8, max_wait=1.0)
        batcher.start()
        first = submit(batcher, "a")
        await asyncio.sleep(0.05)
        rest = submit(batcher, "b", "c")
        result = await answers({**first, **rest})
        await batcher.stop()
        return result

    assert [answer.text for answer in run(gathered).values()] == ["rw: a", "rw: b", "rw: c"]
    assert gathering.batches == [["a", "b", "c"]]

    full = RecordingEngine()

    async def not_waiting():
        batcher = MicroBatcher(full, None, Metrics(), max_batch_size=2, max_wait=60)
        batcher.start()
        result = await answers(submit(batcher, "a", "b"))  # within 5 s: the full batch left at once
        await batcher.stop()
        return result

    assert [answer.text for answer in run(not_waiting).values()] == ["rw: a", "rw: b"]
    assert full.batches == [["a", "b"]]


def test_each_engine_call_has_one_prompt_and_one_set_of_sampling_parameters():
    """One batch of queries with different prompts and parameters is one engine call per
    (prompt, parameters), in the batcher's own worker threads."""
    engine = RecordingEngine(held=True)
    think, greedy = get_prompt("tsqr-think-v1"), GenerationParams.preset("greedy")

    async def scenario():
        batcher = MicroBatcher(engine, None, Metrics(), max_batch_size=8)
        batcher.start()
        await engine_busy(batcher, engine)
        futures = {**submit(batcher, "x1", "x2"), **submit(batcher, "y", params=greedy),
                   **submit(batcher, "z", prompt=think)}
        engine.release.set()
        result = await answers(futures)
        await batcher.stop()
        return result

    result = run(scenario)
    assert all(answer.text == f"rw: {key}" for key, answer in result.items())
    assert [call[:3] for call in engine.calls[1:]] == [
        (["x1", "x2"], PROMPT.id, PARAMS.key()), (["y"], PROMPT.id, greedy.key()), (["z"], think.id, PARAMS.key())]
    assert all(call[3].startswith("tsqr-engine") for call in engine.calls)


def test_a_batch_caches_its_rewrites_and_not_its_failures(tmp_path):
    cache = RewriteCache(tmp_path / "cache.sqlite", {"backend": "recording", "model": "recording"})
    failures = {"bad": Completion.failed(BackendError("no rewrite")),
                "cut": Completion(text="half a rewr", error=BackendError("cut off"))}  # text and an error: failed
    engine = RecordingEngine(answer=lambda queries: [failures.get(query, Completion(text=f"rw: {query}"))
                                                     for query in queries])
    metrics = Metrics()

    async def scenario():
        batcher = MicroBatcher(engine, cache, metrics)
        batcher.start()
        result = await answers(submit(batcher, "good", "bad", "cut"))
        await batcher.stop()
        return result

    result = run(scenario)
    assert result["good"].text == "rw: good" and result["bad"] == failures["bad"] and result["cut"] == failures["cut"]
    assert cache.get_many(["good", "bad", "cut"]) == {"good": "rw: good"} and metrics.counters["cache_errors"] == 0
    cache.close()


def test_a_cache_that_cannot_be_written_still_answers(tmp_path):
    cache = UnwritableCache(tmp_path / "cache.sqlite", {"backend": "recording", "model": "recording"})
    metrics = Metrics()

    async def scenario():
        batcher = MicroBatcher(RecordingEngine(), cache, metrics)
        batcher.start()
        result = await answers(submit(batcher, "q"))
        await batcher.stop()
        return result

    assert run(scenario)["q"].text == "rw: q" and metrics.counters["cache_errors"] == 1
    cache.close()


def exploding(queries):
    raise RuntimeError("engine exploded")


@pytest.mark.parametrize("answer, error", [
    (exploding, "engine exploded"),
    (lambda queries: [Completion(text="only one")], "backend recording returned 1 completions for 2 queries"),
])
def test_an_engine_failure_answers_each_waiter_with_it(answer, error):
    metrics = Metrics()

    async def scenario():
        batcher = MicroBatcher(RecordingEngine(answer=answer), None, metrics)
        batcher.start()
        result = await answers(submit(batcher, "a", "b"))
        await batcher.stop()
        return result

    for completion in run(scenario).values():
        assert completion.text is None and str(completion.error) == error
    assert metrics.counters["rewriter_errors"] == 1


def test_admission_past_max_queue_is_refused_naming_the_limit():
    metrics = Metrics()

    async def scenario():
        batcher = MicroBatcher(RecordingEngine(), None, metrics, max_queue=2)  # not started: queries stay queued
        queued = submit(batcher, "a", "b")
        assert batcher.depth == metrics.queue_depth == 2
        with pytest.raises(QueueFull, match=r"^2 generations are waiting \(limit 2\)$"):
            batcher.submit("c", "c", PROMPT, PARAMS)
        with pytest.raises(QueueFull, match=r"^2 generations are waiting and this request adds 1 \(limit 2; "):
            submit(batcher, "a", "c")
        assert submit(batcher, "a")["a"] is queued["a"]  # one already in flight joins, full or not

    run(scenario)


def test_a_query_with_n_samples_counts_n_generations_against_max_queue():
    """--max-queue bounds the generations waiting: one query asking for 3 samples is 3 of them (it
    counted 1, so 256 queries with n = 16 were 4,096 generations under a limit of 1,024)."""
    metrics = Metrics()

    async def scenario():
        batcher = MicroBatcher(RecordingEngine(), None, metrics, max_queue=4)  # not started: queries stay queued
        samples = ("k0", "k1", "k2")
        batcher.submit_all({"a#n=3": ("a", PROMPT, PARAMS, samples)})
        with pytest.raises(QueueFull, match=r"^3 generations are waiting and this request adds 3 "):
            batcher.submit_all({"b#n=3": ("b", PROMPT, PARAMS, samples)})
        with pytest.raises(QueueFull, match=r"^3 generations are waiting and this request adds 2 "):
            submit(batcher, "c", "d")
        submit(batcher, "c")  # one more generation fits
        with pytest.raises(QueueFull, match=r"^4 generations are waiting \(limit 4\)$"):
            batcher.submit("e", "e", PROMPT, PARAMS)
        assert batcher.depth == 2  # two queries wait, four generations
        with pytest.raises(RequestTooLarge, match=r"^this request asks for 5 generations "):
            batcher.submit_all({"f#n=5": ("f", PROMPT, PARAMS, samples + ("k3", "k4"))})
        # one already in flight is joined, not counted: 4 queued and 0 new fit
        assert batcher.submit_all({"a#n=3": ("a", PROMPT, PARAMS, samples), "c": ("c", PROMPT, PARAMS)})

    run(scenario)


def test_generations_taken_by_the_engine_free_the_queue_and_a_failed_query_fails_each_sample():
    """Generations leave the count when the engine takes them (not when they finish): a query the
    engine works on does not hold back admission; a sampled query whose batch fails gets one failed
    completion per sample."""
    metrics = Metrics()

    async def scenario():
        engine = RecordingEngine(held=True)
        batcher = MicroBatcher(engine, None, metrics, max_queue=3)
        batcher.start()
        busy = await engine_busy(batcher, engine)  # taken: the queue is empty again
        queued = batcher.submit_all({"a#n=3": ("a", PROMPT, PARAMS, ("k0", "k1", "k2"))})
        with pytest.raises(QueueFull, match=r"^3 generations are waiting "):
            submit(batcher, "b")
        engine.release.set()
        await answers({"busy": busy})
        sampled = await answers(queued)  # RecordingEngine has no generate_samples: the base class's
        assert [c.text for c in sampled["a#n=3"]] == ["rw: a"] * 3
        await batcher.stop()
        assert batcher._generations == 0
        sampled_query = Pending("k", "q", PROMPT, PARAMS, asyncio.get_running_loop().create_future(),
                                sample_keys=("x", "y"))
        failures = sampled_query.failed(RuntimeError("down"))
        assert len(failures) == 2 and all(c.text is None and str(c.error) == "down" for c in failures)

    run(scenario)


@pytest.mark.parametrize("queued", [[], ["q1"], ["q1", "q2"]])
def test_stop_finishes_queued_and_running_batches_and_never_blocks_the_event_loop(queued):
    """stop() drains: it returns once every accepted query is answered, and while it waits for the
    engine the event loop keeps running (other requests' answers still go out)."""
    engine = RecordingEngine(held=True)

    async def scenario():
        batcher = MicroBatcher(engine, None, Metrics(), max_batch_size=1)
        batcher.start()
        futures = {"busy": await engine_busy(batcher, engine), **submit(batcher, *queued)}
        stopping = asyncio.create_task(batcher.stop())
        for _ in range(10):  # the loop ticks while stop waits for the held engine
            await asyncio.sleep(0.01)
        waited = not stopping.done()
        engine.release.set()
        await asyncio.wait_for(stopping, 10)
        return waited, {key: future.result() for key, future in futures.items() if future.done()}

    waited, done = run(scenario)
    assert waited and [answer.text for answer in done.values()] == [f"rw: {key}" for key in ["busy", *queued]]


def test_a_bug_past_the_engine_call_answers_with_it_and_the_next_request_runs():
    engine = RecordingEngine()

    async def scenario():
        batcher = MicroBatcher(engine, None, Metrics())
        real, calls = batcher._generate, []

        def broken(items):  # what test_service_failures does to a running tsqr serve
            calls.append(len(items))
            if len(calls) == 1:
                raise KeyError("a bug")
            return real(items)

        batcher._generate = broken
        batcher.start()
        failed = await answers(submit(batcher, "q"))
        again = await answers(submit(batcher, "q"))
        await batcher.stop()
        return failed["q"], again["q"]

    failed, again = run(scenario)
    assert failed.text is None and isinstance(failed.error, KeyError) and "a bug" in str(failed.error)
    assert again.text == "rw: q" and engine.batches == [["q"]]


def test_a_batch_cancelled_while_generating_answers_every_waiter():
    """The event loop's shutdown cancels every task, a running batch's included: each request
    waiting for one of its queries gets a failed completion at once (not at its time budget), and a
    later request for the query is generated afresh."""
    engine = RecordingEngine(held=True)

    async def scenario():
        batcher = MicroBatcher(engine, None, Metrics(), max_batch_size=4)
        batcher.start()
        futures = submit(batcher, "a", "b")
        assert await asyncio.to_thread(engine.started.wait, 10)
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()  # as asyncio.run does on its way out
        done, _ = await asyncio.wait(futures.values(), timeout=2)
        result = {query: future.result() for query, future in futures.items() if future in done}
        engine.release.set()
        assert set(result) == {"a", "b"}, "a waiter was left pending"

        batcher.start()  # a new runner: the cancelled batch gave its engine slot back
        again = submit(batcher, "a")["a"]
        fresh = await asyncio.wait_for(again, 10)
        await batcher.stop()
        return result, again is futures["a"], fresh

    result, joined_the_dead_one, fresh = asyncio.run(scenario())
    assert all(answer.text is None and isinstance(answer.error, RuntimeError) for answer in result.values())
    assert {str(answer.error) for answer in result.values()} == {"the batch was abandoned (the service is stopping)"}
    assert not joined_the_dead_one and fresh.text == "rw: a" and fresh.error is None
    assert engine.batches == [["a", "b"], ["a"]]


def test_a_bug_outside_the_engine_call_answers_every_waiter():
    """A batch that raises before its engine call (here its metrics): its waiters are answered
    with the failure, and the next request for the same query runs."""
    engine = RecordingEngine()

    async def scenario():
        batcher = MicroBatcher(engine, None, MetricsFailingOnce(), max_batch_size=4)
        batcher.start()
        futures = submit(batcher, "a", "b")
        done, _ = await asyncio.wait(futures.values(), timeout=2)
        result = {query: future.result() for query, future in futures.items() if future in done}
        assert set(result) == {"a", "b"}, "a waiter was left pending"
        fresh = await asyncio.wait_for(submit(batcher, "a")["a"], 10)
        await batcher.stop()
        return result, fresh

    result, fresh = asyncio.run(scenario())
    assert all(answer.text is None and answer.error is not None for answer in result.values())
    assert fresh.text == "rw: a" and engine.batches == [["a"]]
