"""What tsqr's two HTTP servers (``tsqr serve``, ``tsqr proxy``) share: running an ASGI app under
uvicorn with bounded connections, and bounded body reads.

uvicorn times out idle keep-alive connections, but a client that sends its request line and
headers a byte at a time keeps a connection (and its memory) for ever: every byte cancels the
keep-alive timer and nothing re-arms it. Here each request's headers must be complete within
``read_timeout`` seconds of the connection opening, or of the first bytes of a later request on
a kept-alive connection (idle time between requests stays uvicorn's keep-alive timeout); the
body has its own bound (``read_limited``, within the read timeout).

A client that stops reading its answer holds it in memory (and, in the proxy, a connection to the
search node) for as long as it keeps the connection open: asyncio's transports buffer what the
peer has not taken, and ``close()`` waits for the buffer to drain. Here an answer whose unread part
stays above the transport's high-water mark for ``write_timeout`` seconds has its connection
aborted. ``max_connections`` bounds how many connections are served at once (uvicorn's
``limit_concurrency``: past it, requests are answered 503 and their connections closed).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any

from .errors import InputError

DEFAULT_WRITE_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 1024


def bounded_protocol(read_timeout: float, write_timeout: float = DEFAULT_WRITE_TIMEOUT) -> type[asyncio.Protocol]:
    """uvicorn's own HTTP protocol (h11, or httptools when installed), closing connections whose
    request headers are not complete in time, and aborting those that leave an answer unread."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class BoundedProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _header_timer: asyncio.TimerHandle | None = None
        _write_timer: asyncio.TimerHandle | None = None
        _between_requests = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_deadline()  # a new connection must send its headers in time

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # An idle kept-alive connection is uvicorn's (its keep-alive timeout); the clock starts
            # again when the next request's first bytes arrive.
            self._cancel_header_deadline()
            self._between_requests = True

        def data_received(self, data: bytes) -> None:
            if self._between_requests:
                self._between_requests = False
                self._arm_header_deadline()
            super().data_received(data)

        def pause_writing(self) -> None:
            # the peer is not taking what was written: it has write_timeout to take enough of it
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = self.loop.call_later(write_timeout, self._answer_unread)

        def resume_writing(self) -> None:
            super().resume_writing()
            self._cancel_write_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_deadline()
            self._cancel_write_deadline()
            super().connection_lost(exc)

        def _arm_header_deadline(self) -> None:
            self._cancel_header_deadline()
            self._header_timer = self.loop.call_later(read_timeout, self._headers_overdue)

        def _cancel_header_deadline(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _cancel_write_deadline(self) -> None:
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None

        def _headers_overdue(self) -> None:
            waiting_for_headers = self.cycle is None or self.cycle.response_complete
            if waiting_for_headers and not self.transport.is_closing():
                self.transport.close()

        def _answer_unread(self) -> None:
            self._write_timer = None
            # abort, not close: close() would keep the buffer until the peer reads it; uvicorn
            # then sees a disconnect, and a streamed answer stops (the proxy frees its upstream)
            self.transport.abort()

    return BoundedProtocol


async def read_limited(request: Any, limit: int) -> bytes | None:
    """A Starlette request's body, or None once it passes ``limit`` bytes: a declared length is
    checked first, and a chunked body (no length) as it arrives, never buffered whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class BodyStalled(Exception):
    """A streamed request body that stopped arriving (see :func:`paced`)."""


async def paced(chunks: Any, idle_timeout: float, total_timeout: float) -> Any:
    """A request body's chunks as they come, each within ``idle_timeout`` seconds of the last and
    all within ``total_timeout`` (BodyStalled otherwise): a body streamed on to a search node holds
    a connection there while it trickles."""
    loop_time = asyncio.get_running_loop().time
    started = loop_time()
    iterator = chunks.__aiter__()
    while True:
        left = total_timeout - (loop_time() - started)
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), min(idle_timeout, max(left, 0.0)))
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise BodyStalled(f"the body stopped arriving (no bytes for {idle_timeout:g} s, or not all within "
                              f"{total_timeout:g} s)") from None
        yield chunk


def refuse_ambiguous_framing(app: Any) -> Any:
    """An ASGI app answering 400, and closing the connection, to a request that carries both
    Content-Length and Transfer-Encoding (RFC 9112 6.1: the framing is ambiguous, the way requests
    are smuggled). uvicorn's parser took the chunked body and kept the connection, so the bytes
    after it were answered as a second request."""
    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            names = {name.lower() for name, _ in scope.get("headers", [])}
            if b"content-length" in names and b"transfer-encoding" in names:
                body = b'{"error": "a request with both Content-Length and Transfer-Encoding is refused"}'
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


def uvicorn_config(app: Any, read_timeout: float, write_timeout: float = DEFAULT_WRITE_TIMEOUT,
                   max_connections: int = DEFAULT_MAX_CONNECTIONS, **settings: Any):
    """``uvicorn.Config`` with the header and write deadlines, the connection cap and the framing
    checks; ``settings`` are uvicorn's own."""
    import uvicorn

    return uvicorn.Config(refuse_ambiguous_framing(app), http=bounded_protocol(read_timeout, write_timeout),
                          # uvicorn counts the connection asking: its limit N serves N - 1 at once
                          limit_concurrency=max_connections + 1, **settings)


def bind(host: str, port: int, command: str) -> socket.socket:
    """The listening socket, bound before anything slow happens (a taken port fails at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise InputError(f"cannot listen on {host}:{port} ({error.strerror}); is another {command} running? "
                         "Pass another --port") from None
    listener.listen(2048)
    return listener


def serve(app: Any, listener: socket.socket, command: str, what: str, read_timeout: float,
          write_timeout: float = DEFAULT_WRITE_TIMEOUT, max_connections: int = DEFAULT_MAX_CONNECTIONS,
          **settings: Any) -> None:
    """Run ``app`` on ``listener`` until SIGINT/SIGTERM (in-flight requests finish first, 30 s at
    most), saying on stderr when it is ready and when it has stopped."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets)
            # here, not after run(): uvicorn raises the captured SIGTERM again once it returns
            print(f"{command}: stopped", file=sys.stderr, flush=True)

    host, port = listener.getsockname()[:2]
    server = Server(uvicorn_config(app, read_timeout, write_timeout, max_connections, log_level="warning",
                                   timeout_graceful_shutdown=30, **settings))
    if settings.get("access_log"):  # after uvicorn's own logging set-up: its access lines are INFO
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    print(f"{command}: {what}, ready on http://{host}:{port} (Ctrl-C stops)", file=sys.stderr, flush=True)
    server.run(sockets=[listener])
