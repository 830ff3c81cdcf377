"""`tsqr serve`: the shared rewrite service over one engine (transformers, vllm, openai, file)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from tsqr_plugins.lazy import require
from tsqr_plugins.service.config import ENGINES, ServiceConfig


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the shared rewrite service",
        description="Serve /v1/rewrite, /v1/chat/completions, /health, /metrics and /v1/models. "
        "Binds 127.0.0.1:8000 unless told otherwise. Flags override the --config YAML file.",
    )
    parser.add_argument("--config", help="YAML file with any of the settings below (dashes or underscores)")
    parser.add_argument("--engine", choices=ENGINES)
    parser.add_argument("--model", help="transformers/vllm: path or hub id; openai: model name upstream")
    parser.add_argument("--rewrites", help="file engine: published rewrites (.json or .jsonl)")
    parser.add_argument("--upstream", action="append",
                        help="openai engine: base URL of a `vllm serve` (…/v1); repeat for several replicas")
    parser.add_argument("--upstream-strategy", choices=("least-busy", "round-robin"),
                        help="several upstreams: how batches are spread (default least-busy)")
    parser.add_argument("--health-interval", type=float, help="several upstreams: seconds between health checks (default 5)")
    parser.add_argument("--served-model-name", help="name reported by /v1/models")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--api-key", help="require this bearer token (default $TSQR_API_KEY; none if unset)")
    parser.add_argument("--prompt", help="prompt id (default tsqr-v1)")
    parser.add_argument("--preset", help="sampling preset (default paper)")
    parser.add_argument("--cache", help="SQLite rewrite cache (default: one per engine and model)")
    parser.add_argument("--no-cache", action="store_true", default=None)
    parser.add_argument("--max-batch-size", type=int, help="queries per engine batch (default 32)")
    parser.add_argument("--max-wait-ms", type=float, help="extra wait for a batch to fill, in ms (default 0: batches form while the engine is busy)")
    parser.add_argument("--max-queue", type=int, help="queued queries before 429 (default 1024)")
    parser.add_argument("--concurrent-batches", type=int, help="engine batches in flight (default 1; openai 8; vllm 4)")
    parser.add_argument("--timeout", type=float, help="per-request time budget in seconds (default 30)")
    parser.add_argument("--read-timeout", type=float,
                        help="seconds a client has to send its headers, and again its body (default 10)")
    parser.add_argument("--access-log", action="store_true", default=None, help="log every request (uvicorn's access log)")
    parser.add_argument("--max-queries-per-request", type=int)
    parser.add_argument("--max-query-chars", type=int)
    parser.add_argument("--device", help="transformers: cpu, cuda … (default auto)")
    parser.add_argument("--dtype", help="transformers/vllm (default auto)")
    parser.add_argument("--max-model-len", type=int, help="vllm (default 16000)")
    parser.add_argument("--gpu-memory-utilization", type=float, help="vllm (default 0.6)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = {key: value for key, value in vars(args).items() if key not in ("config", "run", "command", "verbose")}
    config = ServiceConfig.load(args.config, **settings)
    require("uvicorn", "serve", "tsqr serve")
    from tsqr_plugins.service.app import create_app

    from tsqr_plugins.httpserver import bind, serve

    listener = bind(config.host, config.port, "tsqr serve")  # a taken port fails now, not after the model has loaded
    app = create_app(config)
    service = app.state.service
    serve(app, listener, config.read_timeout, "tsqr serve", f"{config.engine} {service.model_name}",
          access_log=config.access_log)
    return 0
