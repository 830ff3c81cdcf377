"""Failures past the engine call: a locked or broken cache, output that is not text, a bug in the
batcher. Every request still answers, at once, and nothing stays wedged for later requests."""

import sqlite3
import threading

import httpx
import pytest

from tsqr_plugins.backends.base import Completion
from tsqr_plugins.testing.service import RunningService
from tests.test_service import CountingEngine, engine_config, metric, post

pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra")


def test_a_cache_locked_by_another_process_answers_and_wedges_nothing(tmp_path, monkeypatch):
    from tsqr_plugins.service import app

    monkeypatch.setattr(app, "CACHE_BUSY_TIMEOUT", 0.2)
    engine = CountingEngine()
    config = engine_config(tmp_path, timeout=20)
    with RunningService(config, engine) as running:
        writer = sqlite3.connect(config.cache, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # another process writing: ours waits, then gives up
        try:
            first = post(running.url, {"queries": ["locked"]}).json()["rewrites"][0]
            again = post(running.url, {"queries": ["locked"]}).json()["rewrites"][0]
            metrics = httpx.get(running.url + "/metrics").text
            in_flight = dict(running.service.batcher._in_flight)
        finally:
            writer.execute("ROLLBACK")
            writer.close()
        cached_later = [post(running.url, {"queries": ["locked"]}).json()["rewrites"][0] for _ in range(2)]
    # answered by the engine (not a fallback after the 20 s budget), and not cached while locked
    assert first["text"] == again["text"] == "rw: locked" and not first["fallback"] and not again["fallback"]
    assert sum(batch.count("locked") for batch in engine.batches) >= 2 and in_flight == {}
    assert metric(metrics, "tsqr_cache_errors_total") == 2
    assert cached_later[-1]["cached"] and cached_later[-1]["text"] == "rw: locked"  # once unlocked, cached again


class SurrogateEngine(CountingEngine):
    def generate(self, queries, prompt, params):
        super().generate(queries, prompt, params)
        return [Completion(text=f"rw \ud800 {q}") for q in queries]  # as an upstream's JSON "\ud800" decodes

    def chat(self, conversations, params):
        return [Completion(text="hello \udfff") for _ in conversations]


def test_output_that_is_not_text_falls_back_and_strict_is_502(tmp_path):
    engine = SurrogateEngine()
    with RunningService(engine_config(tmp_path, timeout=20), engine) as running:
        answers = [post(running.url, {"queries": ["odd"]}) for _ in range(2)]
        strict = post(running.url, {"queries": ["odd"], "strict": True})
        chat = httpx.post(running.url + "/v1/chat/completions", timeout=30, json={
            "model": "counting", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]})
        in_flight = dict(running.service.batcher._in_flight)
    for answer in answers:
        rewrite = answer.json()["rewrites"][0]
        assert answer.status_code == 200 and rewrite["fallback"] and rewrite["text"] == "odd"
        assert "lone surrogate" in rewrite["reason"]
    assert strict.status_code == 502 and "lone surrogate" in strict.json()["error"]["message"]
    assert chat.status_code == 502 and "lone surrogate" in chat.json()["error"]["message"]  # not a 500 from JSON
    assert in_flight == {}


def test_a_bug_past_the_engine_call_resolves_every_waiter(tmp_path):
    engine = CountingEngine()
    with RunningService(engine_config(tmp_path, timeout=20), engine) as running:
        batcher = running.service.batcher
        real = batcher._generate
        calls = []

        def broken(items):
            calls.append(len(items))
            if len(calls) == 1:
                raise KeyError("a bug")
            return real(items)

        batcher._generate = broken
        strict = post(running.url, {"queries": ["bug"], "strict": True})
        after = post(running.url, {"queries": ["bug"]}).json()["rewrites"][0]
    assert strict.status_code == 502 and "a bug" in strict.json()["error"]["message"]
    assert after["text"] == "rw: bug" and not after["fallback"]  # the next request tries afresh
    assert batcher._in_flight == {}


def test_cache_reads_never_run_on_the_event_loop(tmp_path):
    engine = CountingEngine()
    with RunningService(engine_config(tmp_path), engine) as running:
        cache = running.service.cache
        read_in = []
        real = cache.get_many

        def recording(keys):
            read_in.append(threading.current_thread().name)
            return real(keys)

        cache.get_many = recording
        post(running.url, {"queries": ["a", "b"]})
        assert post(running.url, {"queries": ["a"]}).json()["rewrites"][0]["cached"]
    assert len(read_in) == 2 and all(name.startswith("tsqr-cache") for name in read_in)
