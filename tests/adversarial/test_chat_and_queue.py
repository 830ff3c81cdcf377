"""Chat pass-through within the same bounds as rewrites, and queued work nobody waits for."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tsqr_plugins import deadline
from tsqr_plugins.backends.base import Completion
from tsqr_plugins.errors import BackendTimeout
from tsqr_plugins.testing.service import RunningService
from tests.test_service import CountingEngine, engine_config, metric, post

pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra")

CONVERSATION = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]


class ChattingEngine(CountingEngine):
    """chat() answers at once, or (``hold``) works until released or until its caller's time budget
    is spent, recording which."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.chat_started = threading.Event()
        self.stopped_at_deadline = threading.Event()
        self.chats = 0

    def chat(self, conversations, params):
        self.chats += 1
        self.chat_started.set()
        if self.hold is not None:
            end = time.monotonic() + 30
            while not self.hold.is_set() and time.monotonic() < end:
                if deadline.expired():  # what the transformers backend's stopping criterion checks
                    self.stopped_at_deadline.set()
                    return [Completion.failed(BackendTimeout("the time budget was spent"))]  # as it answers
                time.sleep(0.01)
        return [Completion(text="hi", finish_reason="length" if params.max_tokens < 5 else "stop")]


def chat(url, **body):
    return httpx.post(url + "/v1/chat/completions", json={"model": "counting", "messages": CONVERSATION, **body},
                      timeout=30)


def test_an_abandoned_conversation_stops_generating(tmp_path):
    hold = threading.Event()
    engine = ChattingEngine(hold=hold)
    with RunningService(engine_config(tmp_path, timeout=0.5), engine) as running:
        answer = chat(running.url)
        stopped = engine.stopped_at_deadline.wait(10)  # before: it went on for its whole 30 s
        hold.set()
    # 504 whichever notices first: the service's wait, or the engine at its deadline
    assert answer.status_code == 504, answer.text
    assert stopped


def test_conversations_queue_behind_the_engine_and_get_429_past_max_queue(tmp_path):
    hold = threading.Event()
    engine = ChattingEngine(hold=hold)
    config = engine_config(tmp_path, timeout=20, max_queue=2, concurrent_batches=1)
    with RunningService(config, engine) as running:
        answers = []
        clients = [threading.Thread(target=lambda: answers.append(chat(running.url))) for _ in range(2)]
        for client in clients:
            client.start()
        assert engine.chat_started.wait(10)
        while running.service._chats < 2:  # both accepted: one running, one waiting for the worker
            time.sleep(0.01)
        refused = chat(running.url)
        hold.set()
        for client in clients:
            client.join(30)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert [a.status_code for a in answers] == [200, 200] and engine.chats == 2  # one at a time, not in parallel


def test_conversation_limits_model_names_and_finish_reason(tmp_path):
    engine = ChattingEngine()
    with RunningService(engine_config(tmp_path, max_query_chars=100, max_queries_per_request=4), engine) as running:
        too_long = httpx.post(running.url + "/v1/chat/completions", timeout=30, json={
            "messages": [{"role": "user", "content": "x" * 101}]})
        too_many = httpx.post(running.url + "/v1/chat/completions", timeout=30, json={
            "messages": [{"role": "user", "content": "x"}] * 5})
        unknown = chat(running.url, model="gpt-4o")
        cut = chat(running.url, max_tokens=2)
        whole = chat(running.url)
    assert too_long.status_code == 413 and "101 characters; the limit is 100" in too_long.json()["error"]["message"]
    assert too_many.status_code == 413 and "5 messages" in too_many.json()["error"]["message"]
    assert unknown.status_code == 404 and "The model `gpt-4o` does not exist" in unknown.json()["error"]["message"]
    assert cut.json()["choices"][0]["finish_reason"] == "length"
    assert whole.json()["choices"][0]["finish_reason"] == "stop"
    assert engine.chats == 2  # refused requests never reached the engine


def test_queries_of_timed_out_requests_do_not_run_ahead_of_live_ones(tmp_path):
    hold = threading.Event()
    engine = CountingEngine(hold=hold)
    config = engine_config(tmp_path, timeout=0.5, max_batch_size=1, concurrent_batches=1)
    with RunningService(config, engine) as running:
        first = threading.Thread(target=lambda: post(running.url, {"queries": ["running"]}))
        first.start()
        while not engine.batches:
            time.sleep(0.01)
        given_up = post(running.url, {"queries": ["abandoned"]}).json()["rewrites"][0]  # queued, then times out
        hold.set()
        first.join(30)
        running.config.timeout = 20  # a live request now
        live = post(running.url, {"queries": ["live"]}).json()["rewrites"][0]
        metrics = httpx.get(running.url + "/metrics").text
    assert given_up["fallback"] and "time budget" in given_up["reason"]
    assert live["text"] == "rw: live"
    assert ["abandoned"] not in engine.batches  # before: generated after the fact, ahead of "live"
    assert metric(metrics, "tsqr_expired_total") == 1


def test_the_openai_backend_ends_its_request_at_the_callers_deadline():
    from tests.recording_server import RecordingOpenAIServer
    from tsqr_plugins.backends.openai import OpenAIBackend
    from tsqr_plugins.params import GenerationParams

    hold = threading.Event()
    with RecordingOpenAIServer(hold=hold) as upstream:
        backend = OpenAIBackend(upstream.base_url, model="tiny", max_retries=2)
        (completion,) = deadline.run_until(lambda: backend.chat([CONVERSATION], GenerationParams()),
                                           time.monotonic() + 0.5)
        hold.set()
        backend.close()
    # before: the request waited the backend's own 120 s timeout and came back answered
    assert completion.error is not None and "time budget" in str(completion.error), completion
