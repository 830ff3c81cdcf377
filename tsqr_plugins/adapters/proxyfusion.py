"""`tsqr proxy --fusion rrf`: a ``_search`` the stage rewrites is answered with the reciprocal rank
fusion of the original search and the rewritten one, as the client stages answer ``search()``
(which searches are fused, the two item bodies and the fused answer: ``fusedsearch.py``; this
module is the proxy's I/O).

Without a budget both searches go to the node as ONE ``_msearch``. With ``--budget`` (anytime) the
original is searched at once while the rewrite is made; a rewrite within the budget is searched
and fused, a later one is not waited for (the original's answer): the caller waits at most the
budget plus one search. With ``--samples N`` each sample that did not fall back is its own
rewritten search (1 + N items; anytime: N searches at once, all samples waited for up to the
budget), ``X-Tsqr-Fusion-Samples`` naming the samples fused. A search fusion cannot answer faithfully goes out as without fusion, its
answer saying why (``X-Tsqr-Fusion-Skipped``); a failure on the rewrite's side never costs the
caller the original's answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from .. import querydsl
from ..core import as_backend_error
from ..errors import BackendTimeout
from . import fusedsearch
from .fusedsearch import Split
from .proxy import SearchProxy
from .proxyheaders import fallback_headers, not_used
from .relay import forwarded_headers, json_document, latin1

logger = logging.getLogger(__name__)

FUSED = "X-Tsqr-Fusion"  # rrf: the answer is the fusion
FUSED_SAMPLES = "X-Tsqr-Fusion-Samples"  # --samples N: the samples fused (from 0), comma-separated
SKIPPED = "X-Tsqr-Fusion-Skipped"  # why the answer is not a fusion
IN_TIME = "X-Tsqr-Rewrite-In-Time"  # anytime: 1 or 0
# A node answer is read whole to be fused (the proxy relays any other answer as it streams);
# past this the original search is relayed instead.
MAX_ANSWER_BYTES = 100 * 1024 * 1024
NO_TEXT_QUERY = "no text query to rewrite"
NOTHING_REWRITTEN = "nothing was rewritten (the rewrite fell back)"
JSON_TYPES = ("application/json", "application/vnd.elasticsearch+json")


@dataclass
class NodeAnswer:
    """A search node's answer to a request the proxy made itself, read whole."""

    status: int
    headers: list[tuple[str, str]]  # its end-to-end fields, as relayed (no length or encoding)
    content: bytes  # decoded
    document: Any  # the JSON body; None when not JSON or too large
    too_large: bool = False


async def fused_search(proxy: SearchProxy, request, body: bytes, readable: bytes):
    """Answer a ``_search`` of a fusing proxy (``settings.fusion == "rrf"``).

    Args:
        proxy: The proxy (its node, rewriter, settings, timeouts).
        request: The Starlette request.
        body: Its body as it came.
        readable: The body decoded (``body`` when it came without a Content-Encoding).

    Returns:
        The fused answer (JSON, 200), the original's, or the answer as without fusion.
    """
    document = json_document(readable)
    if not proxy.text_queries(document):
        return await proxy.rewrite_and_forward(request, body, readable, {SKIPPED: NO_TEXT_QUERY})
    reason = media_reason(request.headers)
    target = None
    if reason is None:
        target, reason = fusedsearch.split_request(document, request.url.query)
    if target is None:  # the plain rewritten search (the budget bounding the rewrite)
        return await proxy.rewrite_and_forward(request, body, readable, {SKIPPED: header_text(reason)})
    if proxy.settings.budget is not None:
        return await _anytime(proxy, request, body, document, target)
    try:
        searches, headers = await proxy.rewrite_samples(document, request.url.path, request.headers)
    except Exception as error:
        if proxy.rewriter.strict:
            return _rewriting_failed(error)
        logger.warning("query rewriting failed; forwarding the original search (%s)", error)
        searches, headers = [], fallback_headers(proxy.settings.samples)
    if not searches:  # the caller's bytes, as they came
        return await proxy._forward(request, body, {**headers, SKIPPED: NOTHING_REWRITTEN})
    deadline = time.monotonic() + proxy.timeout  # the _msearch and any search after it
    content_type = request.headers["content-type"]
    rewrites = [dataclasses.replace(target, body=new_document) for _, new_document in searches]
    answer = await _ask(proxy, request, _msearch_path(request), urlencode(target.call),
                        fusedsearch.ndjson(target, rewrites), ndjson_type(content_type), deadline)
    if not isinstance(answer, NodeAnswer):
        return answer  # no answer from the node: 502/503/504
    items = answer.document.get("responses") if isinstance(answer.document, dict) else None
    if answer.status != 200 or not isinstance(items, list) or len(items) != 1 + len(rewrites):
        why = (f"the _msearch answer passed {MAX_ANSWER_BYTES} bytes" if answer.too_large
               else f"the _msearch was answered with status {answer.status}")
        return await _original_search(proxy, request, body, headers, why, deadline)
    return await _respond(proxy, request, body, target, items, headers, answer.document.get("took"),
                          answer.headers, deadline, _fused_samples(proxy, searches))


async def _anytime(proxy: SearchProxy, request, body: bytes, document: dict, target: Split):
    """The original searched at once, the rewrite made meanwhile within the budget, then the
    rewritten search; the original's answer when the rewrite is late. Both are ``_search`` requests
    on the caller's path and query string, each asking for the first ``from + size`` hits."""
    budget = proxy.settings.budget
    started = time.monotonic()
    deadline = started + proxy.timeout
    path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    content_type = request.headers["content-type"]

    def search(item_body: dict):
        return _ask(proxy, request, path, request.url.query, json.dumps(item_body).encode(), content_type, deadline)

    first_body, _ = fusedsearch.item_bodies(target, target)
    original = asyncio.ensure_future(search(first_body))
    try:
        in_time = True
        try:
            # the late rewrite runs on in its worker thread (Python cannot stop it), so a cache
            # behind the rewriter has it next time, as with the client stages
            searches, headers = await asyncio.wait_for(
                proxy.rewrite_samples(document, request.url.path, request.headers, budget), budget)
        except Exception as error:
            if isinstance(error, asyncio.TimeoutError):  # the outer wait (rewrite and _termvectors) ran out
                error = BackendTimeout(f"no rewrite within the budget of {budget:g} s")
            in_time = not isinstance(error, BackendTimeout) or time.monotonic() < started + budget
            if proxy.rewriter.strict:  # the original search went out already; it is not answered
                return _rewriting_failed(error)
            if in_time:  # a late rewrite is anytime's ordinary case, not a failure
                logger.warning("query rewriting failed; answering the original search (%s)", error)
            texts = proxy.text_queries(document)
            searches, headers = [], fallback_headers(proxy.settings.samples, texts)
        timing = {IN_TIME: "1" if in_time else "0"}
        if not searches:
            reason = NOTHING_REWRITTEN if in_time else f"the rewrite missed the budget of {budget:g} s"
            return await _original_answer(proxy, request, body, await original, target,
                                          {**headers, **timing, SKIPPED: reason}, deadline)
        rewrites = [dataclasses.replace(target, body=new_document) for _, new_document in searches]
        seconds = await asyncio.gather(*(search(item) for item in fusedsearch.item_bodies(target, rewrites)[1:]))
        first = await original
        if not isinstance(first, NodeAnswer):
            return first
        documents = [{"error": "the rewritten search got no answer the proxy could read"}
                     if first.too_large or not isinstance(second, NodeAnswer) or second.too_large
                     else second.document for second in seconds]
        tooks = [item.get("took") for item in (first.document, *documents) if isinstance(item, dict)]
        took = sum(tooks) if len(tooks) == 1 + len(documents) and all(isinstance(t, int) for t in tooks) else None
        return await _respond(proxy, request, body, target, [first.document, *documents], headers, took,
                              first.headers, deadline, {**timing, **_fused_samples(proxy, searches)}, original=first)
    finally:
        if not original.done():
            original.cancel()


async def _respond(proxy: SearchProxy, request, body: bytes, target: Split, answers: list, headers: dict[str, str],
                   took: Any, node_fields: list[tuple[str, str]], deadline: float, extra: dict[str, str],
                   original: NodeAnswer | None = None):
    """The answer from the original's and the rewrites' answers (``fusedsearch.outcome``): the
    fusion, or the original's page when a rewrite's answer cannot be used (a rewrite past the
    engine's clause limit counted as a fallback, as without fusion), or the node's own answer to the
    original search when that failed (``original``: anytime's, as the node gave it). ``extra``'s
    ``X-Tsqr-Fusion-Samples`` goes only with a fusion."""
    first, *second = answers
    fused_samples = extra.get(FUSED_SAMPLES)
    extra = {k: v for k, v in extra.items() if k != FUSED_SAMPLES}
    samples = [int(n) for n in fused_samples.split(",")] if fused_samples else None
    result = fusedsearch.outcome(first, second, target, proxy.settings, took, samples)
    if result.answer is None:
        if original is not None and not original.too_large:
            return _raw(original, {**not_used(headers), **extra, SKIPPED: header_text(result.reason)})
        return await _original_search(proxy, request, body, {**headers, **extra}, result.reason, deadline)
    if result.fusion is not None:
        fused = {FUSED: "rrf", **({FUSED_SAMPLES: fused_samples} if fused_samples else {})}
        return _json(result.answer, node_fields, {**headers, **extra, **fused}, _pretty(target))
    clause_limit = result.rewrite_refused and not proxy.rewriter.strict and querydsl.passed_clause_limit(str(second))
    fields = {**(not_used(headers) if clause_limit else headers), **extra, SKIPPED: header_text(result.reason)}
    return _json(result.answer, node_fields, fields, _pretty(target))


async def _original_answer(proxy: SearchProxy, request, body: bytes, first: Any, target: Split,
                           fields: dict[str, str], deadline: float):
    """Anytime's answer without the rewrite: the original's page, or the node's answer as it gave it."""
    if not isinstance(first, NodeAnswer):
        return first
    if first.too_large:
        return await _original_search(proxy, request, body, fields, fields[SKIPPED], deadline)
    hits = first.document.get("hits", {}).get("hits") if isinstance(first.document, dict) else None
    if first.status == 200 and target.start and isinstance(hits, list):  # asked from 0: cut to the page
        return _json(fusedsearch.page(first.document, target), first.headers, fields, _pretty(target))
    return _raw(first, fields)


async def _original_search(proxy: SearchProxy, request, body: bytes, headers: dict[str, str], reason: str,
                           deadline: float):
    """The caller's own search relayed as it came (within what is left of the deadline)."""
    left = deadline - time.monotonic()
    if left <= 0:
        return proxy.node_failure(asyncio.TimeoutError(), proxy.timeout)
    fields = {**not_used(headers), **{k: v for k, v in headers.items() if k == IN_TIME}, SKIPPED: header_text(reason)}
    return await proxy._forward(request, body, fields, timeout=left)


async def _ask(proxy: SearchProxy, request, path: str, query: str, content: bytes, content_type: str,
               deadline: float):
    """POST ``content`` to ``path`` on the node for the caller, its answer read whole; or the
    proxy's answer when the node gives none in time."""
    left = deadline - time.monotonic()
    if left <= 0:
        return proxy.node_failure(asyncio.TimeoutError(), proxy.timeout)
    outgoing = proxy.client.build_request("POST", proxy.target(path, query), content=content, timeout=left,
                                          headers=proxy.node_headers(request, content_type))
    try:
        return await asyncio.wait_for(_read(proxy, outgoing), left)  # httpx times each read, not the whole
    except Exception as error:
        return proxy.node_failure(error, proxy.timeout)


async def _read(proxy: SearchProxy, outgoing) -> NodeAnswer:
    response = await proxy.client.send(outgoing, stream=True)
    try:
        fields = [(name, value) for name, value in forwarded_headers(latin1(response.headers.raw))
                  if name.lower() != "content-encoding"]  # httpx decodes
        content = bytearray()
        async for chunk in response.aiter_bytes():
            content += chunk
            if len(content) > MAX_ANSWER_BYTES:
                return NodeAnswer(response.status_code, fields, b"", None, too_large=True)
    finally:
        await response.aclose()
    document = None
    if "json" in response.headers.get("content-type", ""):
        try:
            document = json.loads(bytes(content))
        except (ValueError, RecursionError):
            pass
    return NodeAnswer(response.status_code, fields, bytes(content), document)


def _json(document: dict, node_fields: list[tuple[str, str]], fields: dict[str, str], pretty: bool):
    """A JSON answer (200) with the node's end-to-end fields (X-Elastic-Product, which
    elasticsearch-py checks, Warning, ...) and the proxy's."""
    content = json.dumps(document, ensure_ascii=False, indent=2 if pretty else None).encode()
    return _response(200, content, node_fields, fields, "application/json; charset=UTF-8")


def _raw(answer: NodeAnswer, fields: dict[str, str]):
    """A node's answer as it gave it, with the proxy's fields."""
    return _response(answer.status, answer.content, answer.headers, fields, None)


def _response(status: int, content: bytes, node_fields: list[tuple[str, str]], fields: dict[str, str],
              content_type: str | None):
    from starlette.responses import Response

    relayed = list(node_fields)
    if content_type and not any(name.lower() == "content-type" for name, _ in relayed):
        relayed.append(("content-type", content_type))
    relayed += list(fields.items()) + [("content-length", str(len(content)))]
    response = Response(content, status_code=status)
    response.raw_headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in relayed]
    return response


def _fused_samples(proxy: SearchProxy, searches: list[tuple[int, dict]]) -> dict[str, str]:
    """``X-Tsqr-Fusion-Samples``: the samples whose searches are fused (``--samples`` above 1)."""
    if proxy.settings.samples == 1:
        return {}
    return {FUSED_SAMPLES: ",".join(str(number) for number, _ in searches)}


def _rewriting_failed(error: Exception):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": f"query rewriting failed: {as_backend_error(error)}"}, status_code=502)


def _msearch_path(request) -> str:
    """``/<index>/_msearch`` (the index as the caller wrote it, percent-escapes kept) or ``/_msearch``."""
    raw = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    segments = raw.rstrip("/").split("/")  # the last one is _search, perhaps written %5Fsearch
    return "/".join(segments[:-1] + ["_msearch"])


def _pretty(target: Split) -> bool:
    return any(name == "pretty" and value != "false" for name, value in target.call)


def media_reason(headers) -> str | None:
    """Why a request's media types rule out a fused answer (JSON), or None: its Content-Type must be
    JSON (a body without one is the node's to judge) and its Accept, if any, JSON too."""
    content_type = headers.get("content-type")
    if content_type is None:
        return "the request has no Content-Type"
    for name, value in (("Content-Type", content_type), ("Accept", headers.get("accept"))):
        kinds = [part.split(";")[0].strip().lower() for part in (value or "").split(",") if part.strip()]
        if not all(kind in JSON_TYPES or (name == "Accept" and kind == "*/*") for kind in kinds):
            return f"the request's {name} is not JSON ({value[:80]}); a fused answer is JSON"
    return None


def ndjson_type(content_type: str) -> str:
    """The ``_msearch`` Content-Type for a search sent as ``content_type``: Elasticsearch's
    versioned JSON type has an NDJSON twin with the same ``compatible-with``."""
    kind, _, parameters = content_type.partition(";")
    if kind.strip().lower() == "application/vnd.elasticsearch+json":
        return "application/vnd.elasticsearch+x-ndjson" + (";" + parameters if parameters else "")
    return "application/x-ndjson"


def header_text(text: str | None) -> str:
    """``text`` fit for a header field: printable ASCII (an engine's error may hold any character
    or a line break), at most 300 characters."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in (text or ""))[:300]
