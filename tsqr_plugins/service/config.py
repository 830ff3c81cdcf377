"""The service's settings: a dataclass, loadable from YAML, with CLI flags taking precedence."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

from tsqr_plugins.backends.options import ModelOptions
from tsqr_plugins.errors import InputError
from tsqr_plugins.httpserver import DEFAULT_MAX_CONNECTIONS, DEFAULT_WRITE_TIMEOUT
from tsqr_plugins.settings import current_names, renamed_keyword, setting
from tsqr_plugins.textfile import read_text

REWRITERS = ("transformers", "vllm", "openai", "file")


@dataclass
class ServiceConfig(ModelOptions):
    """Every setting of ``tsqr serve``, declared once: the flags (``cli/serve.py``), the YAML file
    (``--config``, dashes or underscores) and the Python API read these fields.

    Each field's documentation is the ``help`` of its ``setting(...)`` below, which ``tsqr serve
    --help`` shows with the default (field ``max_batch_size`` is ``--max-batch-size``); ``dataclasses.fields``
    gives it as ``field.metadata["help"]``. Defaults that depend on the rewriter are resolved in
    ``__post_init__``.

    Args:
        engine: The old name of ``rewriter``, kept for one release with a warning.

    Raises:
        InputError: An unknown rewriter, one without what it needs (``model``, ``rewrites``,
            ``upstream``), or a limit out of range.
    """

    rewriter: str | None = setting(None, help="what produces the rewrites", choices=REWRITERS, default_text="file",
                                   aliases=("engine",))
    rewrites: str | None = setting(None, help="file rewriter: published rewrites (.json or .jsonl)")
    upstream: list[str] = setting(default_factory=list, help="openai rewriter: base URL of a `vllm serve` (…/v1), "
                                  "one per replica")
    upstream_strategy: str = setting("least-busy", help="several upstreams: how batches are spread",
                                     choices=("least-busy", "round-robin"))
    health_interval: float = setting(5.0, help="several upstreams: seconds between health checks")
    served_model_name: str | None = setting(None, help="name reported by /v1/models")
    host: str = setting("127.0.0.1", help="bind address")
    port: int = setting(8000, help="port")
    api_key: str | None = setting(None, help="require this bearer token", default_text="$TSQR_API_KEY; none if unset")
    upstream_api_key: str | None = setting(None, help="openai rewriter: the bearer token the model server(s) want "
                                           "(never the service's own key)",
                                           default_text="$TSQR_UPSTREAM_API_KEY; none if unset")
    prompt: str = setting("tsqr-v1", help="prompt id")
    preset: str = setting("paper", help="sampling preset")
    cache: str | None = setting(None, help="SQLite rewrite cache", default_text="one per rewriter and model")
    no_cache: bool = setting(False, help="no rewrite cache")
    max_batch_size: int = setting(32, help="queries per rewriter batch")
    max_wait_ms: float = setting(0.0, help="extra wait for a batch to fill, in ms",
                                 default_text="0: batches form while the rewriter is busy")
    max_queue: int = setting(1024, help="queued generations before 429 (a query with n samples counts n)")
    concurrent_batches: int | None = setting(None, help="rewriter batches in flight",
                                             default_text="1; openai 8; vllm 4")
    timeout: float = setting(30.0, help="per-request time budget in seconds")
    max_queries_per_request: int = setting(256, help="queries (or chat messages) in one request before 413")
    max_query_chars: int = setting(32_000, help="characters of one query (or conversation) before 413")
    max_samples: int = setting(16, help="rewrites one query may ask for (/v1/rewrite's and chat's \"n\") before 400")
    max_body_bytes: int = setting(4 * 1024 * 1024, help="bytes of one request body before 413")
    read_timeout: float = setting(10.0, help="seconds a client has to send its headers, and again its body")
    write_timeout: float = setting(DEFAULT_WRITE_TIMEOUT, help="seconds a client may leave an answer unread "
                                   "(over 64 KiB of it) before its connection is closed")
    max_connections: int = setting(DEFAULT_MAX_CONNECTIONS, help="connections served at once; past it, 503")
    access_log: bool = setting(False, help="log every request (uvicorn's access log)")
    engine: InitVar[str | None] = None  # the old name of rewriter

    def __post_init__(self, engine: str | None) -> None:
        self.rewriter = renamed_keyword("ServiceConfig", "rewriter", self.rewriter, "engine", engine, stacklevel=4)
        if self.rewriter is None:
            self.rewriter = "file"
        if self.rewriter not in REWRITERS:
            raise InputError(f"unknown rewriter {self.rewriter!r}; choose one of {list(REWRITERS)}")
        if self.rewriter in ("transformers", "vllm") and not self.model:
            raise InputError(f"--rewriter {self.rewriter} needs --model <path-or-hub-id>")
        if self.rewriter == "file" and not self.rewrites:
            raise InputError("--rewriter file needs --rewrites <published.json>")
        if self.rewriter == "openai" and not self.upstream:
            raise InputError("--rewriter openai needs --upstream http://127.0.0.1:8001/v1")
        if self.upstream_strategy not in ("least-busy", "round-robin"):
            raise InputError(f"--upstream-strategy must be least-busy or round-robin, got {self.upstream_strategy!r}")
        if self.api_key is None:
            self.api_key = os.environ.get("TSQR_API_KEY") or None
        if self.upstream_api_key is None:
            self.upstream_api_key = os.environ.get("TSQR_UPSTREAM_API_KEY") or None
        if self.concurrent_batches is None:
            # openai: HTTP requests in flight; vllm: the async engine interleaves concurrent batches.
            self.concurrent_batches = {"openai": 8, "vllm": 4}.get(self.rewriter, 1)
        if not 0 < self.timeout < float("inf"):  # a request's own 'timeout' is checked the same way
            raise InputError(f"timeout must be a positive number of seconds, got {self.timeout}")
        for name in ("read_timeout", "write_timeout"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        for name in ("max_connections", "max_batch_size", "max_queue", "max_queries_per_request", "max_query_chars",
                     "concurrent_batches", "max_samples"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> ServiceConfig:
        """Settings from a YAML file, then overrides.

        Args:
            path: A YAML mapping of settings (dashes or underscores); None: none. Old names
                (``engine``) are read as the new ones, with a logged warning.
            **overrides: Settings that take precedence over the file; None values are ignored.

        Raises:
            InputError: The file cannot be read or is not a mapping, or a setting is unknown.
        """
        values: dict[str, Any] = {}
        if path is not None:
            import yaml

            try:
                loaded = yaml.safe_load(read_text(path)) or {}
            except (OSError, yaml.YAMLError) as error:
                raise InputError(f"cannot read service config {path}: {error}") from error
            if not isinstance(loaded, dict):
                raise InputError(f"service config {path} must be a YAML mapping")
            values.update(current_names(cls, {key.replace("-", "_"): value for key, value in loaded.items()},
                                        f"service config {path}"))
        values.update({key: value for key, value in overrides.items() if value is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        old = {name for f in dataclasses.fields(cls) for name in f.metadata.get("aliases", ())}  # keywords, warned
        unknown = sorted(set(values) - known - old)
        if unknown:
            raise InputError(f"unknown service settings {unknown}; known: {sorted(known)}")
        if isinstance(values.get("upstream"), str):
            values["upstream"] = [values["upstream"]]
        return cls(**values)
