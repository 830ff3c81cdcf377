"""`tsqr proxy`: a ``_search`` proxy that puts the rewriting stage in front of Elasticsearch/OpenSearch
for callers in any language.

``GET``/``POST`` ``/_search`` and ``/<index>/_search`` bodies have their text queries rewritten
(the same stage as the Python clients); every other request, and every search the stage leaves
alone, goes to the configured search node unchanged — method, path, query string, headers, body —
and its answer comes back unchanged, streamed both ways. Requests only ever go to that node. The
answer to a rewritten search carries ``X-Tsqr-Rewritten`` / ``X-Tsqr-Fallback`` /
``X-Tsqr-Dropped-Terms`` headers (``proxyheaders.py``); its body is the engine's own. The HTTP
intermediary's own pieces (fields relayed, bodies decoded, answers streamed) are in ``relay.py``;
``--fusion rrf`` is ``proxyfusion.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from .. import querydsl
from ..core import Rewriter, as_backend_error, join_samples
from ..errors import InputError
from ..httpserver import BodyStalled, paced, read_limited
from ..lazy import require
from . import stage, stagesamples
from .proxyheaders import fallback_headers, not_rewritten_header, not_used, samples_headers
from .relay import (PEEK_BYTES, BodyTooLarge, answer_bytes, decoded_body, forwarded_headers, has_dot_segments,
                    json_document, latin1, peek, readable_text, relay_response_class)
from .stagecall import samples_within_budget, search_parts, single_index
from .stage import StageSettings

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
SEARCH_METHODS = ("GET", "POST")
NODE_CONNECTIONS = 100  # httpx's default pool size, named for the error that says it is used up
MAX_SAMPLES = 16  # --samples' limit, as tsqr serve's --max-samples default
STAGE_HEADERS = ("authorization", "cookie", "x-opaque-id")  # what our own _termvectors calls carry along


def is_search_path(path: str) -> bool:
    """``/_search`` or ``/<index>/_search`` (not ``_msearch``, ``_search/scroll``, templates, ...)."""
    parts = [part for part in path.split("/") if part]
    return parts == ["_search"] or (len(parts) == 2 and parts[1] == "_search" and not parts[0].startswith("_"))


class SearchProxy:
    """The proxy's request handling (a Starlette app is built around it by :func:`create_proxy_app`).

    Args:
        search_node: The Elasticsearch/OpenSearch URL every request goes to (``--search-node``).
        rewriter: Makes the rewrites; None relays every request untouched.
        settings: How text queries are rewritten; None: ``StageSettings()``'s defaults.
        max_body_bytes: Largest ``_search`` body read, also once decoded; past it, 413 (default 10 MiB).
        timeout: Seconds to wait for the search node (``--search-node-timeout``); past it, 504.
        read_timeout: Seconds a client has to send a ``_search`` body (past it, 408), and between
            the chunks of any other body.

    Raises:
        InputError: ``search_node`` is not an http(s) URL with a host.
    """

    def __init__(self, search_node: str, rewriter: Rewriter | None, settings: StageSettings | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, timeout: float = 60.0,
                 read_timeout: float = 10.0) -> None:
        import httpx

        url = httpx.URL(search_node)
        if url.scheme not in ("http", "https") or not url.host:
            raise InputError(f"--search-node must be an http(s) URL like http://127.0.0.1:9200, got {search_node!r}")
        self.search_node = url
        self.rewriter = rewriter
        self.settings = settings or StageSettings()
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout
        self.read_timeout = read_timeout  # for a _search body to arrive
        limits = httpx.Limits(max_connections=NODE_CONNECTIONS, max_keepalive_connections=NODE_CONNECTIONS // 5)
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, limits=limits)
        # Only the client's own fields go upstream: no Accept-Encoding (so no compressed answers to a
        # client that never asked for them), User-Agent or Accept that httpx would add by itself.
        for name in ("accept-encoding", "user-agent", "accept"):
            self.client.headers.pop(name, None)

    def target(self, raw_path: str, query: str) -> Any:
        """The URL for a request path; only ever on the configured search node.

        Args:
            raw_path: The request's path, as it came (percent-escapes kept).
            query: The request's query string, without ``?``; empty for none.
        """
        base = self.search_node.raw_path.decode().rstrip("/")
        path = raw_path if raw_path.startswith("/") else "/" + raw_path
        return self.search_node.copy_with(raw_path=(base + path + (f"?{query}" if query else "")).encode())

    async def handle(self, request):
        """Answer one request: a ``_search`` rewritten and forwarded, anything else relayed as it came.

        Args:
            request: The Starlette request.
        """
        from starlette.responses import JSONResponse

        path, method = request.url.path, request.method
        if b"#" in request.scope.get("raw_path", b"") + request.scope.get("query_string", b""):
            # a fragment has no place in a request target (RFC 9112 3.2); httpx would cut it off
            return JSONResponse({"error": "a request target with '#' is not relayed"}, status_code=400)
        if has_dot_segments(request.scope.get("raw_path", b"").decode("latin-1") or path):
            # an upstream (or httpx) resolves them: out of an upstream's path prefix, or a _search
            # that the stage would not see as one
            return JSONResponse({"error": "a path with . or .. segments is not relayed"}, status_code=400)
        if method in SEARCH_METHODS and is_search_path(path) and self.rewriter is not None:
            try:
                body = await asyncio.wait_for(read_limited(request, self.max_body_bytes), self.read_timeout)
            except asyncio.TimeoutError:
                return JSONResponse({"error": f"the body did not arrive within {self.read_timeout:g} s"}, status_code=408,
                                    headers={"Connection": "close"})
            if body is None:
                return JSONResponse({"error": f"request body over {self.max_body_bytes} bytes"}, status_code=413)
            try:
                readable = decoded_body(body, request.headers.get("content-encoding"), self.max_body_bytes)
            except BodyTooLarge:
                return JSONResponse({"error": f"request body over {self.max_body_bytes} bytes once decoded"},
                                    status_code=413)
            if self.settings.fusion is not None:
                from .proxyfusion import fused_search  # here: proxyfusion builds on this module

                return await fused_search(self, request, body, readable)
            return await self.rewrite_and_forward(request, body, readable)
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        # a body streamed on holds a connection to the node while it comes: it must keep coming
        body = paced(request.stream(), self.read_timeout, self.timeout) if has_body else None
        return await self._forward(request, body, {})

    async def rewrite_and_forward(self, request, body: bytes, readable: bytes, extra_headers: dict[str, str] | None = None):
        """A ``_search`` rewritten (its text queries; within ``budget`` seconds when the stage has one)
        and forwarded, as without fusion; ``extra_headers`` go with the answer.

        Args:
            request: The Starlette request.
            body: Its body as it came.
            readable: The body decoded (``body`` itself when it came without a Content-Encoding).
            extra_headers: More fields for the answer (why fusion was skipped).
        """
        from starlette.responses import JSONResponse

        try:
            new_body, headers = await self._rewrite(readable, request.url.path, request.headers, self.settings.budget)
        except Exception as error:  # strict rewriter: the search does not go out
            return JSONResponse({"error": f"query rewriting failed: {error}"}, status_code=502)
        headers = {**headers, **(extra_headers or {})}
        if new_body is readable:  # untouched: the caller's own bytes, encoded as they came
            return await self._forward(request, body, headers)
        # a rewritten body goes out decoded (its Content-Encoding dropped); on a clause-limit
        # refusal, the original goes out as it came
        return await self._forward(request, new_body, headers, original=body, decoded=readable is not body)

    async def _rewrite(self, body: bytes, path: str, incoming, budget: float | None = None) -> tuple[bytes, dict[str, str]]:
        """The body with its text queries rewritten, and the headers saying what was done.

        Anything the stage cannot read (no body, not JSON, no query) goes out as it came.
        """
        document = json_document(body)
        if document is None:
            return body, {}
        try:
            new_document, headers = await self.rewrite_document(document, path, incoming, budget)
        except Exception as error:
            if self.rewriter.strict:
                raise as_backend_error(error) from error
            logger.warning("query rewriting failed; forwarding the original search (%s)", error)
            return body, fallback_headers(self.settings.samples)
        # nothing rewritten (every rewrite fell back, or none to make): the caller's bytes go out as they came
        return (body, headers) if new_document is None else (json.dumps(new_document).encode(), headers)

    def text_queries(self, document: Any) -> int:
        """How many text queries of a search body the stage would rewrite.

        Args:
            document: The ``_search`` body, parsed (None or anything else: 0).
        """
        plan = self._plan(document)
        return len(plan.leaves) if plan is not None else 0

    def _plan(self, document: Any) -> stage.Plan | None:
        parts = search_parts(document)
        if parts is None:
            return None
        try:
            return stage.plan(parts, self.settings)
        except Exception:  # a body the stage cannot read (nested past the parser, shapes it does not
            return None  # know): the engine's to judge, as it came

    async def rewrite_document(self, document: Any, path: str, incoming,
                               budget: float | None = None) -> tuple[dict | None, dict[str, str]]:
        """A search body with its text queries rewritten (None: nothing rewritten, the body goes as
        it came) and the answer fields saying what was done.

        Args:
            document: The ``_search`` body, parsed.
            path: The request path (its index is the one ``_termvectors`` asks).
            incoming: The request's fields (credentials go with ``_termvectors``).
            budget: Seconds the rewriter may take (None: its own ``timeout``).

        Raises:
            Exception: Whatever the rewriter or the stage raised (the caller falls back or, with a
                strict rewriter, answers 502).
        """
        searches, headers = await self._rewritten(document, path, incoming, budget, each_sample=False)
        return (searches[0][1] if searches else None), headers

    async def rewrite_samples(self, document: Any, path: str, incoming,
                              budget: float | None = None) -> tuple[list[tuple[int, dict]], dict[str, str]]:
        """The rewritten searches to fuse (``--fusion rrf``): with ``--samples 1`` the one of
        :meth:`rewrite_document`; with several, one per sample, every text query rewritten with that
        sample (a sample that fell back for every text query has none). Each with its sample's
        index; none when nothing was rewritten. And the answer fields saying what was done.

        Args:
            document: The ``_search`` body, parsed.
            path: The request path.
            incoming: The request's fields.
            budget: Seconds the rewriter may take (all the samples: one engine call).

        Raises:
            Exception: As :meth:`rewrite_document`.
        """
        return await self._rewritten(document, path, incoming, budget, each_sample=self.settings.samples > 1)

    async def _rewritten(self, document: Any, path: str, incoming, budget: float | None,
                         each_sample: bool) -> tuple[list[tuple[int, dict]], dict[str, str]]:
        plan = self._plan(document)
        if plan is None:
            return [], {}
        if not plan.leaves:
            return [], not_rewritten_header(plan.skipped)
        rows = await samples_within_budget(self.rewriter, plan.texts, self.settings.samples, budget)
        index = single_index(path.strip("/").split("/")[0]) if path.strip("/") != "_search" else None
        auth = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in incoming.items()
                if name.lower() in STAGE_HEADERS]
        columns = [stagesamples.column(rows, n) for n in range(self.settings.samples)] if each_sample \
            else [[join_samples(row) for row in rows]]
        built = []
        for rewrites in columns:
            own = plan if len(columns) == 1 else self._plan(document)  # each sample: a fresh copy
            own.rewrites = rewrites
            built.append(await self._built(own, index, auth))
        infos = [info for _, info in built]
        info = stagesamples.merged(infos, rows) if each_sample else infos[0]
        searches = [(n, {**document, **parts}) for n, (parts, one) in enumerate(built) if one["rewritten"]]
        skipped = not_rewritten_header(plan.skipped)
        samples = samples_headers(rows, self.settings.samples)
        if not info["rewritten"]:  # every rewrite fell back
            return [], {"X-Tsqr-Rewritten": "0", "X-Tsqr-Fallback": str(info["fallback"]), **samples, **skipped}
        dropped = sum(entry.get("dropped_terms", 0) + entry.get("dropped_tokens", 0)
                      for one in infos for entry in one["queries"])
        headers = {"X-Tsqr-Rewritten": str(info["rewritten"]), "X-Tsqr-Fallback": str(info["fallback"]),
                   "X-Tsqr-Dropped-Terms": str(dropped), **samples, **skipped}
        return searches, headers

    async def _built(self, plan: stage.Plan, index: str | None, auth: list) -> tuple[dict, dict]:
        """A plan holding its rewrites as search parts and their metadata (BM25Q's ``_termvectors``
        asked first)."""
        keys = stage.stats_needed(plan, self.settings)
        answers = await asyncio.gather(*(self._termvectors(index, key, auth) for key in keys))
        return stage.apply(plan, self.settings, dict(zip(keys, answers)))

    def node_headers(self, request, content_type: str) -> list[tuple[bytes, bytes]]:
        """The fields of a request the proxy makes itself for the caller (fusion's ``_msearch`` and
        searches): the caller's end-to-end fields with ``content_type``; no Accept-Encoding (the
        proxy reads the answer) and nothing about the caller's body.

        Args:
            request: The caller's Starlette request.
            content_type: The Content-Type of the proxy's own body.
        """
        own = {"content-type", "content-encoding", "accept-encoding"}
        headers = [(name, value) for name, value in forwarded_headers(latin1(request.scope.get("headers", [])))
                   if name.lower() not in own]
        return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers + [("content-type", content_type)]]

    async def _termvectors(self, index: str | None, key, headers: list[tuple[bytes, bytes]]) -> dict | None:
        if index is None:
            return None
        text, fields = key
        url = self.target(f"/{index}/_termvectors", f"routing={querydsl.TERMVECTORS_ROUTING}")
        try:
            response = await self.client.post(url, json=querydsl.termvectors_body(text, list(fields)), headers=headers)
            response.raise_for_status()
            return response.json()
        except Exception as error:  # the search still goes out, with match scoring
            logger.warning("_termvectors on %s failed, BM25Q falls back to match (%s)", index, error)
            return None

    async def _forward(self, request, content, extra_headers: dict[str, str], original: bytes | None = None,
                       decoded: bool = False, timeout: float | None = None):
        """Send to the search node and stream the answer back. For a rewritten search (``original`` given) that
        the engine refuses for its clause count, whole (400/500) or on some shards (200 with shard
        failures), the original search goes out instead, within what is left of the same
        --search-node-timeout. ``decoded``: ``content`` is the decoded form of a body that came with a
        Content-Encoding."""
        import httpx
        from starlette.responses import JSONResponse

        url = self.target(request.scope.get("raw_path", b"").decode() or request.url.path,
                          request.url.query)
        headers = forwarded_headers(latin1(request.scope.get("headers", [])))
        if decoded:
            headers = [(name, value) for name, value in headers if name.lower() != "content-encoding"]
        if not isinstance(content, bytes) and "content-length" in request.headers:
            # A streamed body keeps its length (no chunked encoding that some servers refuse).
            headers.append(("content-length", request.headers["content-length"]))
        timeout = self.timeout if timeout is None else timeout
        outgoing = self.client.build_request(request.method, url, content=content, timeout=timeout,
                                             headers=[(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers])
        started = time.monotonic()
        try:
            upstream = await self.client.send(outgoing, stream=True)
        except BodyStalled as error:  # the node has part of a request: that connection is dropped
            return JSONResponse({"error": str(error)}, status_code=408, headers={"Connection": "close"})
        except Exception as error:
            return self.node_failure(error, timeout)
        head, chunks = b"", upstream.aiter_raw()
        json_answer = "json" in upstream.headers.get("content-type", "")  # not YAML, CBOR, SMILE
        if original is not None and upstream.status_code in (200, 400, 500) and json_answer and not self.rewriter.strict:
            try:
                head = await peek(chunks, PEEK_BYTES)
            except httpx.HTTPError as error:
                await upstream.aclose()
                return JSONResponse({"error": f"search node {self.search_node} broke off its answer: "
                                              f"{type(error).__name__}"}, status_code=502)
            if _passed_clause_limit(head, upstream.status_code, upstream.headers.get("content-encoding")):
                await upstream.aclose()
                logger.warning("the rewritten search passed the engine's clause limit; forwarding the original")
                # what is left of the deadline, but enough for a search (httpx times each read, so
                # the refused attempt may have used more than its share)
                left = max(timeout - (time.monotonic() - started), min(self.timeout, 5.0))
                fallback = {**not_used(extra_headers),
                            **{k: v for k, v in extra_headers.items() if k.startswith("X-Tsqr-Fusion")}}
                return await self._forward(request, original, fallback, timeout=left)
        relayed = forwarded_headers(latin1(upstream.headers.raw))
        if "content-length" in upstream.headers:  # raw bytes are relayed, so the length still holds
            relayed.append(("content-length", upstream.headers["content-length"]))
        relayed += list(extra_headers.items())
        response = relay_response_class()(answer_bytes(head, chunks), status_code=upstream.status_code)
        response.upstream = upstream
        # raw headers, not a mapping: repeated fields (Set-Cookie) must not be folded into one
        response.raw_headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in relayed]
        return response

    def node_failure(self, error: BaseException, timeout: float):
        """The answer when a request to the search node got no answer: 503 when every connection to
        it stayed busy, 504 past ``timeout`` (asyncio's or httpx's), else 502.

        Args:
            error: What the request raised.
            timeout: The seconds it had.
        """
        import httpx
        from starlette.responses import JSONResponse

        if isinstance(error, httpx.PoolTimeout):
            return JSONResponse({"error": f"all {NODE_CONNECTIONS} connections to the search node {self.search_node} "
                                          f"stayed busy for {timeout:g} s"}, status_code=503)
        if isinstance(error, (httpx.TimeoutException, asyncio.TimeoutError)):
            return JSONResponse({"error": f"search node {self.search_node} did not answer within {timeout:g} s "
                                          "(--search-node-timeout)"}, status_code=504)
        return JSONResponse({"error": f"search node {self.search_node} unreachable: {type(error).__name__}"},
                            status_code=502)

    async def aclose(self) -> None:
        """Close the connections to the search node."""
        await self.client.aclose()


def _passed_clause_limit(head: bytes, status: int, encoding: str | None) -> bool:
    """Whether an answer's beginning says the search passed the engine's clause limit: the whole
    search refused (400, or 500 from OpenSearch), or some shards failed in a 200 (their failures
    come before the hits, where a document could hold any words)."""
    text = readable_text(head, encoding)
    if status == 200:  # only what comes before the hits; no hits in sight (filter_path): no failure seen
        text, hits, _ = text.partition('"hits"')
        if not hits:
            return False
    return querydsl.passed_clause_limit(text)


def create_proxy_app(proxy: SearchProxy):
    """A Starlette app routing every path and method to ``proxy.handle``; it closes the proxy on
    shutdown.

    Args:
        proxy: The request handling.
    """
    require("starlette", "serve", "tsqr proxy")
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.routing import Route

    @asynccontextmanager
    async def lifespan(app):
        yield
        await proxy.aclose()

    methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", proxy.handle, methods=methods)], lifespan=lifespan)
