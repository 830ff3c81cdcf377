"""Several OpenAI-compatible upstreams behind one backend (and behind `tsqr serve --rewriter openai`),
against real HTTP servers started by the test that speak the chat-completions protocol with scripted
answers (tests/recording_server.py)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.recording_server import RecordingOpenAIServer
from tsqr_plugins import Rewriter
from tsqr_plugins.backends.replicas import ReplicaPool
from tsqr_plugins.errors import InputError, ServerUnavailableError
from tsqr_plugins.testing.service import free_port


def rewrite_many(pool, n):
    rewriter = Rewriter(pool, params="greedy")
    return [rewriter.rewrite(f"query {i}") for i in range(n)]


def test_round_robin_spreads_batches_and_fails_over():
    with RecordingOpenAIServer() as a, RecordingOpenAIServer() as b:
        pool = ReplicaPool([a.base_url, b.base_url], strategy="round-robin", health_interval=0.2)
        rewrites = rewrite_many(pool, 10)
        assert all(not r.fallback and r.text.startswith("rewrite of") for r in rewrites)
        assert (len(a.requests), len(b.requests)) == (5, 5)
        # the cache is the model's, whatever the number of replicas (it changed with the count before)
        single = ReplicaPool([a.base_url], health_interval=0.2)
        assert pool.cache_identity() == single.cache_identity() == {"backend": "replicas", "model": "tiny"}
        single.close()
        # b is gone: a still answers; b is marked down, with the reason.
        b.__exit__(None, None, None)
        rewrites = rewrite_many(pool, 4)
        assert all(not r.fallback for r in rewrites)
        state = {s["url"]: s for s in pool.states()}
        assert state[b.base_url]["healthy"] is False and state[b.base_url]["last_error"]
        assert state[a.base_url]["healthy"] is True
        pool.close()


def test_least_busy_prefers_the_idle_replica():
    with RecordingOpenAIServer(delay=0.4) as slow, RecordingOpenAIServer() as fast:
        pool = ReplicaPool([slow.base_url, fast.base_url], strategy="least-busy")
        import concurrent.futures

        rewriter = Rewriter(pool, params="greedy")
        with concurrent.futures.ThreadPoolExecutor(4) as workers:
            list(workers.map(rewriter.rewrite, [f"q{i}" for i in range(12)]))
        assert len(fast.requests) > len(slow.requests)  # the slow one stays busy, batches go elsewhere
        pool.close()


def test_a_replica_down_at_start_joins_when_it_comes_up():
    port = free_port()
    with RecordingOpenAIServer() as up:
        pool = ReplicaPool([up.base_url, f"http://127.0.0.1:{port}/v1"], health_interval=0.2)
        assert [s["healthy"] for s in pool.states()] == [True, False]
        assert all(not r.fallback for r in rewrite_many(pool, 3))
        late = RecordingOpenAIServer(port=port)
        with late:
            deadline = time.monotonic() + 10
            while not all(s["healthy"] for s in pool.states()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert all(s["healthy"] for s in pool.states())
            rewrite_many(pool, 4)
            assert late.requests  # the recovered replica takes work again
        pool.close()


def test_pool_errors_are_clear():
    dead = [f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1"]
    with pytest.raises(ServerUnavailableError, match="no upstream answered"):
        ReplicaPool(dead, startup_timeout=0.5)
    with pytest.raises(InputError, match="strategy"):
        ReplicaPool(dead, strategy="random")
    with RecordingOpenAIServer() as a, RecordingOpenAIServer() as b:
        pool = ReplicaPool([a.base_url, b.base_url])
        a.__exit__(None, None, None)
        b.__exit__(None, None, None)
        (rewrite,) = Rewriter(pool).rewrite_batch(["q"])  # every upstream down: fail-open
        assert rewrite.fallback and rewrite.text == "q"
        pool.close()


def test_service_with_several_upstreams():
    pytest.importorskip("uvicorn", reason="tsqr serve needs the 'serve' extra")
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    with RecordingOpenAIServer() as a, RecordingOpenAIServer() as b:
        config = ServiceConfig(rewriter="openai", upstream=[a.base_url, b.base_url], no_cache=True,
                               upstream_strategy="round-robin")
        with RunningService(config) as service:
            for i in range(6):
                answer = httpx.post(f"{service.url}/v1/rewrite", json={"queries": [f"q{i}"]}, timeout=30).json()
                assert answer["rewrites"][0]["text"] == f"rewrite of q{i}"
            health = httpx.get(f"{service.url}/health").json()
            assert [u["healthy"] for u in health["upstreams"]] == [True, True]
            assert sum(u["served"] for u in health["upstreams"]) == 6 and a.requests and b.requests


def test_samples_are_one_request_with_n_per_query_and_fail_over():
    """Several samples go to one replica as one request per query with n (not n requests), and
    past a replica that is gone, to another."""
    with RecordingOpenAIServer() as a, RecordingOpenAIServer() as b:
        pool = ReplicaPool([a.base_url, b.base_url], strategy="round-robin", health_interval=60)
        rows = Rewriter(pool).rewrite_samples(["q1", "q2"], 3)
        assert [r.text for r in rows[0]] == ["rewrite of q1", "rewrite of q1 (sample 1)", "rewrite of q1 (sample 2)"]
        assert [request["n"] for request in a.requests + b.requests] == [3, 3]
        gone = b if a.requests else a  # the next turn's replica
        gone.__exit__(None, None, None)
        rows = Rewriter(pool).rewrite_samples(["q3"], 2)
        assert not any(r.fallback for r in rows[0])
        assert {s["url"]: s["healthy"] for s in pool.states()}[gone.base_url] is False
        pool.close()
