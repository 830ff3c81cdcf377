"""`tsqr serve`: the shared rewrite service over one rewriter (transformers, vllm, openai, file)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from tsqr_plugins.lazy import require
from tsqr_plugins.service.config import ServiceConfig
from tsqr_plugins.settings import add_arguments


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the shared rewrite service",
        description="Serve /v1/rewrite, /v1/chat/completions, /health, /metrics and /v1/models. "
        "Binds 127.0.0.1:8000 unless told otherwise. Flags override the --config YAML file.",
    )
    parser.add_argument("--config", help="YAML file with any of the settings below (dashes or underscores)")
    add_arguments(parser, ServiceConfig)
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
    serve(app, listener, "tsqr serve", f"{config.rewriter} {service.model_name}", config.read_timeout,
          config.write_timeout, config.max_connections, access_log=config.access_log)
    return 0
