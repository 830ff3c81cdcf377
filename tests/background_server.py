"""A real HTTP server on a loopback port, serving from a daemon thread inside ``with`` (the base of
the recording and scripted servers the tests start)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5; a burst of searches (40 fallbacks leaving the proxy
    # at once) overflowed it and Linux reset connections, which no engine's listener does
    request_queue_size = 128


class BackgroundServer:
    """Subclasses set their state, then call ``super().__init__(port)``, and define ``_handler()``."""

    def __init__(self, port: int = 0):
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self):
        raise NotImplementedError

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    """A keep-alive HTTP/1.1 handler that logs nothing (the tests' servers record what they need)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass
