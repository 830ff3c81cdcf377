import threading
import time

import pytest

from tsqr_plugins import GenerationParams, Rewriter
from tsqr_plugins.backends.openai import OpenAIBackend
from tsqr_plugins.errors import BackendError, ServerUnavailableError
from tests.recording_server import RecordingOpenAIServer


def test_requests_carry_the_paper_prompt_and_sampling_and_answers_keep_order():
    with RecordingOpenAIServer() as server:
        backend = OpenAIBackend(server.base_url, max_concurrency=4)
        queries = [f"query number {i}" for i in range(10)]
        results = Rewriter(backend).rewrite_batch(queries)
    assert [r.text for r in results] == [f"rewrite of {q}" for q in queries]
    body = server.requests[0]
    assert body["model"] == "tiny"  # taken from /models when not given
    assert body["messages"][0] == {"role": "system", "content": ""}
    assert body["messages"][1]["content"].startswith("Instructions:\n1. Identify the essential problem.")
    assert (body["temperature"], body["top_p"], body["top_k"], body["repetition_penalty"], body["max_tokens"]) == (
        0.7, 0.8, 20, 1.05, 500)
    assert results[0].model == f"{server.base_url}#tiny"


def test_concurrency_is_bounded():
    with RecordingOpenAIServer(delay=0.3) as server:  # long enough for requests to overlap on a busy machine
        Rewriter(OpenAIBackend(server.base_url, max_concurrency=3)).rewrite_batch([f"q{i}" for i in range(9)])
    assert 1 < server.max_in_flight <= 3


def test_transient_failures_are_retried_with_backoff():
    with RecordingOpenAIServer(fail_first=2) as server:
        result = Rewriter(OpenAIBackend(server.base_url, backoff=0.01)).rewrite("q")
    assert not result.fallback and len(server.requests) == 3


def test_persistent_failure_falls_back_or_raises_when_strict():
    with RecordingOpenAIServer(fail_first=100, fail_status=503) as server:
        backend = OpenAIBackend(server.base_url, max_retries=1, backoff=0.01)
        assert Rewriter(backend).rewrite("q").fallback
        with pytest.raises(BackendError, match="503"):
            Rewriter(backend, strict=True).rewrite("q")


@pytest.mark.parametrize("status", [400, 500, 502, 504])
def test_answers_a_retry_cannot_fix_fall_back_at_once(status):
    """A 502 from the rewrite server cost a search four requests and 4.3 s of backoff before it fell back."""
    with RecordingOpenAIServer(fail_first=100, fail_status=status) as server:
        assert Rewriter(OpenAIBackend(server.base_url, backoff=0.01)).rewrite("q").fallback
    assert len(server.requests) == 1


def test_malformed_responses_fall_back():
    with RecordingOpenAIServer(malformed=True) as server:
        result = Rewriter(OpenAIBackend(server.base_url)).rewrite("q")
    assert result.fallback and "malformed" in result.reason


def test_request_timeout_falls_back():
    hold = threading.Event()
    with RecordingOpenAIServer(hold=hold) as server:
        backend = OpenAIBackend(server.base_url, timeout=0.2, max_retries=0)
        assert Rewriter(backend).rewrite("q").fallback
        assert server.in_flight == 1  # fell back while the server was still holding its answer
        hold.set()


def test_unreachable_server_says_how_to_start_one():
    with RecordingOpenAIServer() as server:
        url = server.base_url
    with pytest.raises(ServerUnavailableError, match="tsqr serve"):
        OpenAIBackend(url, health_timeout=0.5)


def test_api_key_is_sent_and_a_wrong_one_is_named():
    with RecordingOpenAIServer(api_key="s3cret") as server:
        assert not Rewriter(OpenAIBackend(server.base_url, api_key="s3cret")).rewrite("q").fallback
        with pytest.raises(ServerUnavailableError, match="API key"):
            OpenAIBackend(server.base_url, api_key="wrong")


def test_plain_openai_servers_get_no_vllm_fields_and_long_queries_are_cut():
    with RecordingOpenAIServer() as server:
        backend = OpenAIBackend(server.base_url, vllm_sampling=False, max_query_chars=100)
        Rewriter(backend, params=GenerationParams.preset("greedy")).rewrite("x" * 5000)
    body = server.requests[0]
    assert "top_k" not in body and "repetition_penalty" not in body and body["temperature"] == 0
    assert body["messages"][1]["content"].count("x") == 100
