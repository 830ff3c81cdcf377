"""How a local model runs, declared once for every command that loads one: `tsqr rewrite`,
`tsqr proxy` and `tsqr eval` derive their flags from :class:`ModelOptions`, `tsqr serve`'s
settings inherit its fields, and :func:`local_backend` is the one place those options become a
transformers or vLLM backend."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tsqr_plugins.backends import Backend, load_backend
from tsqr_plugins.errors import InputError
from tsqr_plugins.settings import setting

LOCAL = ("transformers", "vllm", "vllm-async")


@dataclass
class ModelOptions:
    """The options of a model loaded in this process (the defaults are the backends' own: a test
    holds them equal to the backend classes' signatures)."""

    model: str | None = setting(None, help="model path or hub id (transformers, vllm); the served name (openai)")
    device: str = setting("auto", help="transformers: cpu, cuda, cuda:1 …")
    dtype: str = setting("auto", help="transformers, vllm: float32, bfloat16 …")
    max_model_len: int = setting(16000, help="vllm: context length in tokens")
    gpu_memory_utilization: float = setting(0.6, help="vllm: share of the GPU's memory it may take")

    @classmethod
    def from_values(cls, values: Any) -> ModelOptions:
        """The options ``values`` sets, the others at their defaults.

        Args:
            values: Parsed flags or another dataclass; an attribute that is missing or None is unset.
        """
        given = {field.name: getattr(values, field.name, None) for field in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in given.items() if value is not None})


def local_backend(name: str, options: ModelOptions) -> Backend:
    """A transformers, vllm or vllm-async backend built from ``options``.

    Args:
        name: ``transformers``, ``vllm`` or ``vllm-async``.
        options: The model and how it runs; ``options.model`` is required.

    Raises:
        InputError: Another name, or no model.
    """
    if name not in LOCAL:
        raise InputError(f"{name!r} is not a local model rewriter; choose one of {list(LOCAL)}")
    if not options.model:
        flag = "vllm" if name == "vllm-async" else name
        raise InputError(f"--rewriter {flag} needs --model <path-or-hub-id>")
    if name == "transformers":
        return load_backend(name, model=options.model, device=options.device, dtype=options.dtype)
    return load_backend(name, model=options.model, dtype=options.dtype, max_model_len=options.max_model_len,
                        gpu_memory_utilization=options.gpu_memory_utilization)
