"""The service's settings: a dataclass, loadable from YAML, with CLI flags taking precedence."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsqr_plugins.errors import InputError

ENGINES = ("transformers", "vllm", "openai", "file")


@dataclass
class ServiceConfig:
    engine: str = "file"
    model: str | None = None  # transformers/vllm: path or hub id; openai: served name upstream
    rewrites: str | None = None  # file engine: published rewrites
    upstream: list[str] = field(default_factory=list)  # openai engine: base URLs of `vllm serve`
    upstream_strategy: str = "least-busy"  # several upstreams: least-busy or round-robin
    health_interval: float = 5.0  # seconds between health checks of several upstreams
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    prompt: str = "tsqr-v1"
    preset: str = "paper"
    cache: str | None = None  # path of the SQLite rewrite cache; None: the default per engine/model
    no_cache: bool = False
    max_batch_size: int = 32
    max_wait_ms: float = 0.0
    max_queue: int = 1024
    concurrent_batches: int | None = None  # engine batches in flight; default 1, openai 8, vllm 4
    timeout: float = 30.0  # per-request time budget in seconds
    max_queries_per_request: int = 256
    max_query_chars: int = 32_000
    max_body_bytes: int = 4 * 1024 * 1024
    read_timeout: float = 10.0  # seconds for a request's headers, and again for its body
    access_log: bool = False
    device: str = "auto"
    dtype: str = "auto"
    max_model_len: int = 16000
    gpu_memory_utilization: float = 0.6

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"unknown engine {self.engine!r}; choose one of {list(ENGINES)}")
        if self.engine in ("transformers", "vllm") and not self.model:
            raise InputError(f"--engine {self.engine} needs --model <path-or-hub-id>")
        if self.engine == "file" and not self.rewrites:
            raise InputError("--engine file needs --rewrites <published.json>")
        if self.engine == "openai" and not self.upstream:
            raise InputError("--engine openai needs --upstream http://127.0.0.1:8001/v1")
        if self.upstream_strategy not in ("least-busy", "round-robin"):
            raise InputError(f"--upstream-strategy must be least-busy or round-robin, got {self.upstream_strategy!r}")
        if self.api_key is None:
            self.api_key = os.environ.get("TSQR_API_KEY") or None
        if self.concurrent_batches is None:
            # openai: HTTP requests in flight; vllm: the async engine interleaves concurrent batches.
            self.concurrent_batches = {"openai": 8, "vllm": 4}.get(self.engine, 1)
        if not self.read_timeout > 0:
            raise InputError(f"read_timeout must be > 0 seconds, got {self.read_timeout}")
        for name in ("max_batch_size", "max_queue", "max_queries_per_request", "max_query_chars", "concurrent_batches"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> ServiceConfig:
        """Settings from a YAML file (optional), then ``overrides`` that are not None."""
        values: dict[str, Any] = {}
        if path is not None:
            import yaml

            try:
                loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as error:
                raise InputError(f"cannot read service config {path}: {error}") from error
            if not isinstance(loaded, dict):
                raise InputError(f"service config {path} must be a YAML mapping")
            values.update({key.replace("-", "_"): value for key, value in loaded.items()})
        values.update({key: value for key, value in overrides.items() if value is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown service settings {unknown}; known: {sorted(known)}")
        if isinstance(values.get("upstream"), str):
            values["upstream"] = [values["upstream"]]
        return cls(**values)
