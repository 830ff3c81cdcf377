"""What ``tsqr proxy`` does as an HTTP intermediary, apart from rewriting: which fields are relayed
(RFC 9110), which request targets are refused, request bodies decoded within a limit, and a search
node's answer peeked at, then streamed back as it came."""

from __future__ import annotations

import functools
from typing import Any

from ..jsontext import loads_exactly

# RFC 9110 7.6.1: connection-specific fields an intermediary never relays (plus host and length,
# which the next hop sets itself), and every field the Connection header names.
HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "host", "content-length"}


def has_dot_segments(raw_path: str) -> bool:
    """Whether a request path holds a ``.`` or ``..`` segment, percent-encoded ones included."""
    from urllib.parse import unquote

    path = raw_path.split("?", 1)[0]
    return any(unquote(segment) in (".", "..") for segment in path.split("/"))


def latin1(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """A message's raw fields as text that encodes back to the very bytes (RFC 9110 obs-text, a
    Latin-1 or UTF-8 value, is relayed as it came, never re-encoded)."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]


def forwarded_headers(headers) -> list[tuple[str, str]]:
    """The end-to-end fields of a message, every occurrence kept (several Set-Cookie stay several)."""
    if isinstance(headers, list):
        items = headers
    else:
        items = headers.multi_items() if hasattr(headers, "multi_items") else list(headers.items())
    named = {token.strip().lower() for name, value in items if name.lower() in ("connection", "proxy-connection")
             for token in value.split(",")}
    return [(name, value) for name, value in items if name.lower() not in HOP_BY_HOP | named]


# How much of the answer to a rewritten search is read before it is relayed: enough for an
# engine's error, or for the _shards section that comes before the hits of a 200.
PEEK_BYTES = 64 * 1024


async def peek(chunks, limit: int) -> bytes:
    """The first ``limit`` bytes (or all) of an answer's raw ``chunks`` (one iterator, read on by
    ``_relay`` afterwards)."""
    head = b""
    async for chunk in chunks:
        head += chunk
        if len(head) >= limit:
            break
    return head


@functools.cache
def relay_response_class():
    from starlette.responses import StreamingResponse

    class RelayResponse(StreamingResponse):
        """A search node's answer streamed back; the node connection is released however the relay
        ends (a client that left, or stopped reading and was cut off, included)."""
        upstream: Any = None  # the node's httpx response

        async def __call__(self, scope, receive, send) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                await self.upstream.aclose()

    return RelayResponse


async def answer_bytes(head: bytes, chunks):
    """The answer's bytes: what was peeked, then the rest as it comes."""
    if head:
        yield head
    async for chunk in chunks:
        yield chunk


def json_document(body: bytes) -> Any:
    """A ``_search`` body parsed, or None: no body, not JSON, or JSON that would not be written back
    as it came (not UTF-8, duplicate keys, 1e400, NaN), or nested past Python's parser (the engine's
    to judge, as it came)."""
    try:
        return loads_exactly(body) if body.strip() else None
    except (ValueError, RecursionError):
        return None


class BodyTooLarge(Exception):
    pass


def decoded_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """A gzip or deflate request body decoded, at most ``limit`` bytes of it (BodyTooLarge past
    that: a small compressed body can expand a thousandfold); any other body, or one that does not
    decode, as it came (the engine's to judge)."""
    import zlib

    kind = (encoding or "").strip().lower()
    if kind not in ("gzip", "x-gzip", "deflate"):
        return body
    # gzip: a gzip header; deflate: RFC 9110 means the zlib format, but raw deflate is also sent
    attempts = (zlib.MAX_WBITS | 16,) if "gzip" in kind else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    for wbits in attempts:
        try:
            decoder = zlib.decompressobj(wbits)
            decoded = decoder.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(decoded) > limit or decoder.unconsumed_tail:
            raise BodyTooLarge()
        return decoded
    return body


def readable_text(body: bytes, encoding: str | None) -> str:
    """An answer's text for a look inside (a gzip or deflate body decoded; the relayed bytes stay raw)."""
    import zlib

    if encoding and encoding.strip().lower() in ("gzip", "deflate"):
        try:
            body = zlib.decompressobj(zlib.MAX_WBITS | 32).decompress(body, 1 << 20)
        except zlib.error:
            pass
    return body.decode("utf-8", "replace")
