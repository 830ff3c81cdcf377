"""A real HTTP server, run inside the tests, that speaks the OpenAI chat-completions protocol and
records what it receives. It stands in for `vllm serve` to test the *client*: request bodies,
concurrency bounds, retries, timeouts and health checks. Its answers are scripted, not generated.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler

from tests.background_server import BackgroundServer


class RecordingOpenAIServer(BackgroundServer):
    def __init__(self, answer=None, fail_first=0, fail_status=503, delay=0.0, malformed=False, api_key=None, port=0,
                 hold=None):
        self.answer = answer or (lambda body: "rewrite of " + body["messages"][-1]["content"].split("Query: ")[-1].strip())
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.delay = delay
        self.hold = hold  # a threading.Event: every answer waits for it (30 s at most)
        self.malformed = malformed  # True: a 200 without choices; bytes: exactly that body
        self.api_key = api_key
        self.requests: list[dict] = []
        self.authorizations: list[str | None] = []  # the Authorization field of every request
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        super().__init__(port)
        self.base_url = f"{self.url}/v1"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self._done()  # before the answer leaves: the client may send its next request at once
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _done(self):
                if getattr(self, "_counted", False):
                    self._counted = False
                    with server._lock:
                        server.in_flight -= 1

            def _authorized(self):
                server.authorizations.append(self.headers.get("Authorization"))
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._send(401, {"error": "bad key"})
                    return False
                return True

            def do_GET(self):
                if not self._authorized():
                    return
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):
                if not self._authorized():
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    number = len(server.requests)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                self._counted = True
                try:
                    time.sleep(server.delay)
                    if server.hold is not None:
                        server.hold.wait(30)
                    if number <= server.fail_first:
                        self._send(server.fail_status, {"error": "scripted failure"})
                    elif server.malformed:
                        garbage = server.malformed
                        self._send(200, garbage if isinstance(garbage, bytes) else b'{"choices": []}')
                    else:
                        # n choices, as vLLM answers them (each with its index), sent last first here
                        # so that a client must order them by index
                        # answer(): one text (sample i's is marked "(sample i)"), or a list, one per choice
                        text = server.answer(body)
                        choices = [{"index": i, "finish_reason": "stop", "message": {
                            "role": "assistant", "content": text[i] if isinstance(text, list)
                            else text if i == 0 else f"{text} (sample {i})"}}
                            for i in reversed(range(body.get("n", 1)))]
                        self._send(200, {"choices": choices})
                finally:
                    self._done()

        return Handler
