"""A search node stand-in for the resource tests: ``GET /big`` answers 8 MiB, ``PUT /_bulk`` reads
its whole declared body before answering (as a node does), anything else a small JSON answer. It
is NOT Elasticsearch; what matters here is how long the proxy holds its connections to it."""

from __future__ import annotations

import threading

from tests.background_server import BackgroundServer, QuietHandler

BIG = b"[" + b"0," * (4 * 1024 * 1024) + b"0]"


class BigAnswerServer(BackgroundServer):
    def __init__(self):
        self.lock = threading.Lock()
        self.open_connections = 0
        super().__init__()

    def _handler(self):
        server = self

        class Handler(QuietHandler):
            def setup(self):
                super().setup()
                with server.lock:
                    server.open_connections += 1

            def finish(self):
                try:
                    super().finish()
                finally:
                    with server.lock:
                        server.open_connections -= 1

            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the proxy gave up on this answer
                    self.close_connection = True

            def do_GET(self):
                self._answer(BIG if self.path == "/big" else b'{"status": "green"}')

            def do_PUT(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)  # blocks while the proxy's client trickles
                self._answer(b'{"errors": false, "items": []}')

            do_POST = do_PUT

        return Handler
