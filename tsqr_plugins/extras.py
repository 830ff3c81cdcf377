"""What each pip extra brings, as (import name, distribution name) pairs, for `tsqr env`."""

from __future__ import annotations

EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "transformers": (("torch", "torch"), ("transformers", "transformers")),
    "vllm": (("vllm", "vllm"),),
    "openai": (("httpx", "httpx"),),
    "serve": (("starlette", "starlette"), ("uvicorn", "uvicorn")),
    "elasticsearch": (("elasticsearch", "elasticsearch"),),
    "opensearch": (("opensearchpy", "opensearch-py"),),
    "llamaindex": (("llama_index.core", "llama-index-core"),),
    "pyserini": (("pyserini", "pyserini"),),
    "pyterrier": (("pyterrier", "pyterrier"),),
    "eval": (("numpy", "numpy"), ("scipy", "scipy"), ("regex", "regex"), ("nltk", "nltk"), ("ir_measures", "ir-measures"), ("pyarrow", "pyarrow"), ("matplotlib", "matplotlib")),
    "train": (("trl", "trl"), ("datasets", "datasets"), ("sentence_transformers", "sentence-transformers")),
}
