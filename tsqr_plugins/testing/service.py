"""Run the rewrite service in a background thread on a free loopback port (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time

from tsqr_plugins.service import ServiceConfig, create_app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunningService:
    """``with RunningService(config, engine) as service: httpx.post(service.url + "/v1/rewrite", …)``"""

    def __init__(self, config: ServiceConfig, engine=None) -> None:
        import uvicorn

        config.host, config.port = "127.0.0.1", free_port()
        self.config = config
        self.app = create_app(config, engine)
        self.url = f"http://127.0.0.1:{config.port}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, host=config.host, port=config.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def service(self):
        return self.app.state.service

    def __enter__(self) -> RunningService:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the rewrite service did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.should_exit = True
        self._thread.join(30)
