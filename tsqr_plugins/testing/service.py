"""Run an ASGI app (the rewrite service, the search proxy) in a background thread on a free
loopback port, for tests and benchmarks."""

from __future__ import annotations

import socket
import threading
import time

from tsqr_plugins.service import ServiceConfig, create_app
from tsqr_plugins.settings import renamed_keyword


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunningApp:
    """``with RunningApp(app) as running: httpx.get(running.url + "/…")``"""

    def __init__(self, app, port: int | None = None, host: str = "127.0.0.1", read_timeout: float = 10.0,
                 **limits: float) -> None:
        import uvicorn

        from tsqr_plugins.httpserver import uvicorn_config

        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A long keep-alive: on a loaded 2-core machine a pooled connection can sit idle past uvicorn's
        # 5 s default and be closed just as the client reuses it (a ReadError that is not the service's).
        # limits: write_timeout, max_connections (httpserver's defaults otherwise)
        self._server = uvicorn.Server(uvicorn_config(app, read_timeout, host=host, port=self.port,
                                                     log_level="warning", timeout_keep_alive=60, **limits))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self):
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{type(self.app).__name__} did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.should_exit = True
        self._thread.join(30)


class RunningService(RunningApp):
    """``with RunningService(config, backend) as service: httpx.post(service.url + "/v1/rewrite", …)``;
    ``engine`` is the old name of ``backend``, kept for one release."""

    def __init__(self, config: ServiceConfig, backend=None, *, engine=None) -> None:
        backend = renamed_keyword("RunningService", "backend", backend, "engine", engine)
        config.host, config.port = "127.0.0.1", free_port()
        self.config = config
        super().__init__(create_app(config, backend), config.port, read_timeout=config.read_timeout,
                         write_timeout=config.write_timeout, max_connections=config.max_connections)

    @property
    def service(self):
        return self.app.state.service
