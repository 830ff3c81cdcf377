"""The shared rewrite service: `/v1/rewrite`, an OpenAI-compatible `/v1/chat/completions`,
`/health`, `/metrics` and `/v1/models`, over one rewriter backend with micro-batching and the cache."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from contextlib import asynccontextmanager
from typing import Any

from tsqr_plugins import deadline
from tsqr_plugins.querydsl import rewritten_match
from tsqr_plugins.backends import Backend, load_backend
from tsqr_plugins.backends.base import Completion
from tsqr_plugins.backends.cache import sample_keys
from tsqr_plugins.cache import RewriteCache
from tsqr_plugins.combine import DEFAULT_REPEAT
from tsqr_plugins.core import Rewrite, finish
from tsqr_plugins.errors import BackendError, BackendTimeout, InputError
from tsqr_plugins.lazy import require
from tsqr_plugins.params import GenerationParams
from tsqr_plugins.prompts import get_prompt, match_conversation
from tsqr_plugins.service.answers import (REWRITE_MODES, RequestFieldError, answer_copies, parse_fusion,
                                          parse_samples, rewrite_answer)
from tsqr_plugins.service.batcher import MicroBatcher, QueueFull, RequestTooLarge
from tsqr_plugins.service.config import ServiceConfig
from tsqr_plugins.service.hybrid import hybrid_query, whole_match
from tsqr_plugins.service.metrics import Metrics
from tsqr_plugins.backends.options import ModelOptions, local_backend
from tsqr_plugins.httpserver import read_limited
from tsqr_plugins.jsontext import JSONValueError, loads_exactly
from tsqr_plugins.text import is_unicode_text

logger = logging.getLogger(__name__)

# The chat model id whose conversations are queries to rewrite (what Elasticsearch's inference
# endpoint is configured with; see engine_configs.elasticsearch_inference_endpoint).
REWRITE_MODEL = "tsqr-rewrite"
MAX_REPEAT = 20  # query2doc uses 5
MAX_ANSWER_CHARS = 8_000_000  # what mode concat's copies and n's samples may echo back in one answer
# How long a cache write waits for another process's write before it is skipped (the rewrite is
# still answered): a rewriter slot is held meanwhile.
CACHE_BUSY_TIMEOUT = 5.0
CLIENT_CLOSED = 499  # nginx's status for a client gone before its answer; only ever in /metrics
CHAT_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_tokens", "stop", "seed")


class HTTPProblem(Exception):
    """An error answered to the client with a status and a JSON message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def build_backend(config: ServiceConfig) -> Backend:
    """The backend of the rewriter ``config`` names."""
    if config.rewriter == "file":
        return load_backend(f"file:{config.rewrites}", on_missing="fallback")
    if config.rewriter in ("transformers", "vllm"):
        # vllm: the async engine, where concurrent batches interleave in vLLM's continuous batching
        name = "vllm-async" if config.rewriter == "vllm" else config.rewriter
        return local_backend(name, ModelOptions.from_values(config))
    # The service's own key (TSQR_API_KEY) guards the service; an upstream gets its own, never that one.
    client = {"max_concurrency": config.max_batch_size * config.concurrent_batches,
              "api_key": config.upstream_api_key, "key_from_environment": False}
    if len(config.upstream) > 1:
        return load_backend("replicas", base_urls=config.upstream, model=config.model, strategy=config.upstream_strategy,
                            health_interval=config.health_interval, **client)
    return load_backend("openai", base_url=config.upstream[0], model=config.model, **client)


class RewriteService:
    """The request handling, independent of the HTTP framework."""

    def __init__(self, config: ServiceConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        self.metrics = Metrics()
        self.identity = backend.cache_identity()
        self.cache = None
        if not config.no_cache and backend.CACHEABLE:
            from tsqr_plugins.backends.cache import default_cache_path

            self.cache = RewriteCache(config.cache or default_cache_path(backend), self.identity,
                                      timeout=CACHE_BUSY_TIMEOUT)
        self.batcher = MicroBatcher(
            backend, self.cache, self.metrics, config.max_batch_size, config.max_wait_ms / 1000,
            config.max_queue, config.concurrent_batches,
        )
        self._cache_readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tsqr-cache")
        self._chat_workers = ThreadPoolExecutor(max_workers=config.concurrent_batches, thread_name_prefix="tsqr-chat")
        self._chats = 0  # conversations waiting for or running on the rewriter
        self.default_params = GenerationParams.preset(config.preset)
        # an OpenAI-compatible upstream's own model name (its model_id also holds the URL)
        upstream_model = getattr(backend, "model", None)
        named = config.model or (upstream_model if isinstance(upstream_model, str) else backend.model_id)
        self.model_name = config.served_model_name or named.rstrip("/").split("/")[-1]
        # what a chat request's "model" may say: the served name, or the model as configured
        self.model_names = {self.model_name, REWRITE_MODEL, backend.model_id} | ({config.model} if config.model else set())

    # ---- /v1/rewrite
    async def rewrite(self, body: Any) -> dict[str, Any]:
        # the OpenSearch rrf pipeline sends the whole match query, field and options (service/hybrid.py)
        whole = whole_match(body.get("match")) if isinstance(body, dict) else None
        if whole is not None:
            body = {**body, "match": whole[1]}
        queries, mode, repeat, prompt, params, strict, budget = self._parse_rewrite_request(body)
        n, fusion = self._parse_samples_and_fusion(body, mode, repeat, queries)
        unique = list(dict.fromkeys(queries))
        rows = await self._complete(unique, prompt, params, budget, n or 1)
        by_query = {}
        for query, row in zip(unique, rows):
            samples = [self._to_rewrite(query, completion, prompt, strict) for completion in row]
            by_query[query] = rewrite_answer(samples, mode, repeat, n, fusion)
        answer = {"rewrites": [by_query[q] for q in queries], "model": self.model_name, "prompt_id": prompt.id}
        if "match" in body:  # the OpenSearch search pipeline writes this object in place of the caller's
            rewrite = answer["rewrites"][0]
            answer["match"] = rewritten_match(body["match"], None if rewrite["fallback"] else rewrite["text"])
            if whole is not None:
                answer["query"] = hybrid_query(whole[0], body["match"], None if rewrite["fallback"] else rewrite["text"])
        return answer

    def _parse_rewrite_request(self, body: Any):
        if not isinstance(body, dict):
            raise HTTPProblem(400, "the body must be a JSON object with 'queries'")
        if "match" in body:  # one match query's options object, as OpenSearch writes it out
            match = body["match"]
            if "queries" in body:
                raise HTTPProblem(400, "send 'queries' or 'match', not both")
            if not isinstance(match, dict) or not isinstance(match.get("query"), str):
                raise HTTPProblem(400, "'match' must be a match query's object with a string 'query'")
            if body.get("mode", "replace") not in ("replace", "concat", "adaptive"):
                raise HTTPProblem(400, "'match' takes mode replace, concat or adaptive (one text per match query)")
            body = {**body, "queries": [match["query"]]}
        queries = body.get("queries")
        if not isinstance(queries, list) or not queries:
            raise HTTPProblem(400, "'queries' must be a non-empty list of strings")
        if len(queries) > self.config.max_queries_per_request:
            raise HTTPProblem(413, f"{len(queries)} queries in one request; the limit is {self.config.max_queries_per_request}")
        for index, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise HTTPProblem(422, f"query {index} is not a non-empty string")
            if not is_unicode_text(query):
                raise HTTPProblem(422, f"query {index} contains a lone surrogate (\\ud800-\\udfff): not text")
            if len(query) > self.config.max_query_chars:
                raise HTTPProblem(413, f"query {index} has {len(query)} characters; the limit is {self.config.max_query_chars}")
        mode = body.get("mode", "replace")
        if mode not in REWRITE_MODES:
            raise HTTPProblem(400, f"unknown mode {mode!r}; choose one of {list(REWRITE_MODES)}")
        repeat = body.get("repeat", DEFAULT_REPEAT)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
            raise HTTPProblem(400, f"'repeat' must be an integer from 1 to {MAX_REPEAT}")
        strict = body.get("strict", False)
        if not isinstance(strict, bool):
            raise HTTPProblem(400, "'strict' must be true or false")
        # A caller with a deadline of its own (an OpenSearch connector) asks for an answer within it:
        # the fallback then arrives before the caller gives up. Never longer than the service's own.
        budget = body.get("timeout", self.config.timeout)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < float("inf"):
            raise HTTPProblem(400, "'timeout' must be a positive number of seconds")
        budget = min(float(budget), self.config.timeout)
        if mode == "concat":  # every query comes back `repeat` times: bound the answer, not just the request
            answer_chars = repeat * sum(len(query) + 1 for query in queries)
            if answer_chars > MAX_ANSWER_CHARS:
                raise HTTPProblem(413, f"mode concat with repeat {repeat} would answer {answer_chars} characters; "
                                       f"the limit is {MAX_ANSWER_CHARS} (send fewer queries or a smaller 'repeat')")
        try:
            prompt = get_prompt(body.get("prompt_id", self.config.prompt))
            overrides = body.get("params") or {}
            if not isinstance(overrides, dict):
                raise InputError("'params' must be an object of sampling parameters")
            params = self.default_params.replace(**overrides)
        except (InputError, TypeError) as error:
            raise HTTPProblem(400, str(error)) from error
        self._check_context(params)
        return queries, mode, repeat, prompt, params, strict, budget

    def _parse_samples_and_fusion(self, body: dict[str, Any], mode: str, repeat: int, queries: list[str]):
        """``n`` (None when not asked) and mode rrf's fusion (None for other modes); 400 for a bad
        value, 413 for an answer that would echo more than MAX_ANSWER_CHARS of the queries."""
        try:
            n, fusion = parse_samples(body, self.config.max_samples), parse_fusion(body, mode)
        except RequestFieldError as error:
            raise HTTPProblem(400, str(error)) from error
        if n is not None:  # each sample may be its query (a fallback), and so may the joined text
            answer_chars = answer_copies(mode, repeat, n) * sum(len(query) + 1 for query in queries)
            if answer_chars > MAX_ANSWER_CHARS:
                raise HTTPProblem(413, f"n {n} (mode {mode}, repeat {repeat}) would answer up to {answer_chars} "
                                       f"characters; the limit is {MAX_ANSWER_CHARS} (send fewer queries or a smaller 'n')")
        return n, fusion

    def _check_context(self, params) -> None:
        context = getattr(self.backend, "context_length", None)
        if isinstance(context, int) and params.max_tokens >= context:
            raise HTTPProblem(400, f"max_tokens {params.max_tokens} leaves no room for the prompt in the model's "
                                   f"context of {context} tokens")

    async def _complete(self, queries: list[str], prompt, params, budget: float | None = None,
                        n: int = 1) -> list[list[Completion]]:
        """Per query its ``n`` completions, ``cached`` set on those from the cache. Cache hits
        first, each sample under its index (``sample_keys``, as ``CachedBackend``); a query missing
        any goes through the batcher (all its samples in one engine call; only the missing ones
        answered from it), each within the request's time budget."""
        budget = self.config.timeout if budget is None else budget
        keys = [sample_keys(self.identity, prompt.id, params, query, n) for query in queries]
        hits = await self._cached([key for row in keys for key in row])
        self.metrics.count("cache_hits", len(hits))
        self.metrics.count("cache_misses", n * len(keys) - len(hits))
        # in flight under sample 0's key (the single rewrite's), n > 1 apart: another n is another generation
        flights = [row[0] if n == 1 else f"{row[0]}#n={n}" for row in keys]
        try:
            futures = self.batcher.submit_all({flight: (query, prompt, params, tuple(row) if n > 1 else ())
                                               for flight, query, row in zip(flights, queries, keys)
                                               if any(key not in hits for key in row)})
        except RequestTooLarge as error:  # a 429 would never clear
            raise HTTPProblem(413, f"{error}: send fewer queries or a smaller 'n'") from error
        except QueueFull as error:
            raise HTTPProblem(429, f"the service is busy: {error}; retry shortly", {"Retry-After": "1"}) from error
        if futures:
            # shield: a timed-out request leaves the generation running, and its result is cached
            waiting = [asyncio.shield(future) for future in futures.values()]
            await asyncio.wait(waiting, timeout=budget)
            for flight, future in futures.items():
                if not future.done():
                    self.batcher.give_up(flight)
        results = []
        for flight, row in zip(flights, keys):
            future = futures.get(flight)
            if future is None:
                fresh = []
            elif future.done():
                fresh = [future.result()] if n == 1 else future.result()
            else:
                fresh = [Completion.failed(BackendTimeout(f"no answer within the time budget of {budget:g} s"))] * n
            results.append([Completion(text=hits[key], cached=True) if key in hits else replace(fresh[i], cached=False)
                            for i, key in enumerate(row)])
        return results

    async def _cached(self, keys: list[str]) -> dict[str, str]:
        """Cache hits, read in a worker thread (never on the event loop); an unreadable cache is a miss."""
        if self.cache is None:
            return {}
        try:
            return await asyncio.get_running_loop().run_in_executor(self._cache_readers, self.cache.get_many, keys)
        except Exception as error:
            logger.warning("rewrite cache read failed (treated as a miss): %s", error)
            self.metrics.count("cache_errors")
            return {}

    def _to_rewrite(self, query, completion: Completion, prompt, strict) -> Rewrite:
        """One completion of ``query`` as its rewrite: ``finish``, what every surface does with a
        completion; 502/504 for a failure with ``strict``."""
        if isinstance(completion.error, InputError):
            # For the library an InputError is the caller's mistake and raises; here the rewriter's
            # refusal (a prompt leaving no room in the context, say) is one more failure of the
            # rewrite: the service falls back, as it does for any rewriter failure, unless strict.
            completion = Completion.failed(BackendError(str(completion.error)))
        try:
            rewrite = finish(query, completion, prompt, self.model_name, strict)
        except BackendError as error:  # strict
            self.metrics.count("strict_failures")
            status = 504 if isinstance(error, BackendTimeout) else 502
            raise HTTPProblem(status, f"rewrite failed (strict): {type(error).__name__}: {error}") from error
        if rewrite.fallback:
            self.metrics.count("fallbacks")
        return rewrite

    # ---- /v1/chat/completions
    async def chat(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            raise HTTPProblem(400, "the body must be a JSON object with a non-empty 'messages' list")
        if body.get("stream"):
            raise HTTPProblem(400, "streaming is not supported; send stream=false")
        messages = body["messages"]
        messages = [{**m, "content": text_content(m.get("content"))} if isinstance(m, dict) else m for m in messages]
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str) for m in messages):
            raise HTTPProblem(400, "each message needs string 'role' and 'content'")
        try:
            overrides = {name: body[name] for name in CHAT_SAMPLING_FIELDS if body.get(name) is not None}
            if isinstance(overrides.get("top_k"), int) and overrides["top_k"] <= 0:
                overrides["top_k"] = None  # OpenAI/vLLM spell "disabled" as -1 or 0
            params = self.default_params.replace(**overrides)
        except (InputError, TypeError) as error:
            raise HTTPProblem(400, str(error)) from error
        self._check_context(params)
        n = body.get("n") if body.get("n") is not None else 1
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.config.max_samples:
            raise HTTPProblem(400, f"'n' must be an integer from 1 to {self.config.max_samples} (--max-samples)")
        model = body.get("model")
        if n > 1 and model == REWRITE_MODEL:
            raise HTTPProblem(400, f"model {REWRITE_MODEL} answers one rewrite; send /v1/rewrite with 'n' for samples")
        if model == REWRITE_MODEL:  # Elasticsearch's _inference endpoint, or any chat client
            return await self._chat_rewrite(messages)
        if model is not None and model not in self.model_names:  # as vLLM's OpenAI server answers
            raise HTTPProblem(404, f"The model `{model}` does not exist. Served: "
                                   f"{sorted({self.model_name, REWRITE_MODEL})} (GET /v1/models)")
        self._check_conversation(messages)
        query, prompt = self._as_rewrite(messages)
        if query is not None:  # our own prompt: batched, coalesced and cached like /v1/rewrite, n samples too
            completions = (await self._complete([query], prompt, params, n=n))[0]
        elif n > 1:  # the rewriters' chat() answers one completion per conversation
            raise HTTPProblem(400, "'n' above 1 is answered for tsqr's own prompts only (what the openai "
                                   "rewriter's samples send); this conversation is not one")
        else:
            completions = [await self._chat_direct(messages, params)]
        for completion in completions:
            if completion.error is not None:
                status = 504 if isinstance(completion.error, BackendTimeout) else 502
                raise HTTPProblem(status, f"the rewriter failed: {completion.error}")
            if not is_unicode_text(completion.text or ""):
                raise HTTPProblem(502, "the rewriter's output is not text (it holds a lone surrogate)")
        return chat_completion(self.model_name, [(c.text, c.finish_reason or "stop") for c in completions])

    def _check_conversation(self, messages: list[dict[str, str]]) -> None:
        """A conversation has the limits of one query: its text, and a message count."""
        if len(messages) > self.config.max_queries_per_request:
            raise HTTPProblem(413, f"{len(messages)} messages in one conversation; the limit is "
                                   f"{self.config.max_queries_per_request}")
        for index, message in enumerate(messages):
            if not is_unicode_text(message["content"]) or not is_unicode_text(message["role"]):
                raise HTTPProblem(422, f"message {index} contains a lone surrogate (\\ud800-\\udfff): not text")
        chars = sum(len(m["content"]) for m in messages)
        if chars > self.config.max_query_chars:
            raise HTTPProblem(413, f"the conversation has {chars} characters; the limit is {self.config.max_query_chars}")

    async def _chat_rewrite(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """Model ``tsqr-rewrite``: the last user message is a query, the answer its rewrite
        (fail-open: the query itself when rewriting fails), whatever the rewriter. Elasticsearch's
        ``PUT _inference/completion/<id>`` checks the endpoint with such a call ("how big")."""
        users = [m["content"] for m in messages if m["role"] == "user" and m["content"].strip()]
        if not users:
            raise HTTPProblem(400, f"model {REWRITE_MODEL} rewrites the last user message; there is none")
        answer = await self.rewrite({"queries": [users[-1]]})  # the same checks and limits as /v1/rewrite
        return chat_completion(REWRITE_MODEL, [(answer["rewrites"][0]["text"], "stop")])

    def _as_rewrite(self, messages: list[dict[str, str]]):
        """(query, prompt) for a conversation that is exactly one of our prompts, which may share
        the rewrite cache; (None, None) for any other, which goes to the rewriter as sent."""
        matched = match_conversation(messages)
        return matched if matched is not None else (None, None)

    async def _chat_direct(self, messages, params) -> Completion:
        """A conversation that is not ours goes to the rewriter as it is, within the same bounds as
        rewrites: queued behind ``concurrent_batches`` others (429 past ``max_queue``), and given up
        at the time budget, when the rewriter stops too (transformers ends generation, openai closes
        its request, vLLM aborts it) instead of generating for nobody."""
        if self._chats + self.batcher.depth >= self.config.max_queue:
            raise HTTPProblem(429, f"the service is busy: {self._chats} conversations and {self.batcher.depth} "
                                   "queries are waiting; retry shortly", {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        stop_at = time.monotonic() + self.config.timeout
        self._chats += 1
        try:
            work = loop.run_in_executor(self._chat_workers, deadline.run_until,
                                        lambda: self._chat_in_time(messages, params), stop_at)
            # on timeout a conversation still queued for a worker is cancelled; a running one ends at stop_at
            results = await asyncio.wait_for(work, self.config.timeout)
            return results[0]
        except asyncio.TimeoutError:
            self.metrics.count("expired")
            return Completion.failed(BackendTimeout(f"no answer within {self.config.timeout:g} s"))
        except (NotImplementedError, InputError) as error:
            raise HTTPProblem(400, str(error)) from error
        except Exception as error:
            return Completion.failed(error)
        finally:
            self._chats -= 1

    def _chat_in_time(self, messages, params) -> list[Completion]:
        if deadline.expired():  # waited its whole budget for a worker: its client has its answer already
            return [Completion.failed(BackendTimeout("the time budget was spent waiting"))]
        return self.backend.chat([messages], params)

    def health(self) -> dict[str, Any]:
        # "engine": the old name of "rewriter", kept for one release
        answer = {"status": "ok", "rewriter": self.config.rewriter, "engine": self.config.rewriter,
                  "model": self.model_name, "queue_depth": self.batcher.depth}
        states = getattr(self.backend, "states", None)
        if callable(states):  # several upstreams: each one's health and load
            answer["upstreams"] = states()
            if not any(state["healthy"] for state in answer["upstreams"]):
                answer["status"] = "degraded"  # requests still answer, with the original query
        return answer

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "tsqr"}
                                           for name in (self.model_name, REWRITE_MODEL)]}


def chat_completion(model: str, choices: list[tuple[str, str]]) -> dict[str, Any]:
    """An OpenAI chat completion of ``choices``, each ``(text, finish_reason)``, indexed in order."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
                    for index, (text, finish_reason) in enumerate(choices)],
    }


def text_content(content: Any) -> Any:
    """A message's text: a string, or OpenAI's list of content parts (``{"type": "text", ...}``)."""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    return content


def create_app(config: ServiceConfig, backend: Backend | None = None):
    """The Starlette application. ``backend`` defaults to the one the config's rewriter names."""
    require("starlette", "serve", "tsqr serve")  # a clear error naming the extra when it is missing
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    service = RewriteService(config, backend if backend is not None else build_backend(config))

    @asynccontextmanager
    async def lifespan(app):
        service.batcher.start()
        yield
        await service.batcher.stop()  # drain what was accepted before shutting down
        service._cache_readers.shutdown(wait=True)
        service._chat_workers.shutdown(wait=True)
        if service.cache is not None:
            service.cache.close()
        service.backend.close()

    def authorized(request: Request) -> bool:
        if not config.api_key:
            return True
        supplied = request.headers.get("authorization", "")
        return hmac.compare_digest(supplied.encode(), f"Bearer {config.api_key}".encode())

    async def read_json(request: Request) -> Any:
        try:
            raw = await asyncio.wait_for(read_limited(request, config.max_body_bytes), config.read_timeout)
        except asyncio.TimeoutError:
            # the rest of the body may still come: the connection ends, not waits for it
            raise HTTPProblem(408, f"the body did not arrive within {config.read_timeout:g} s",
                              {"Connection": "close"}) from None
        if raw is None:
            raise HTTPProblem(413, f"the body is larger than {config.max_body_bytes} bytes")
        try:
            return loads_exactly(raw)
        except json.JSONDecodeError as error:
            raise HTTPProblem(400, f"malformed JSON: {error}") from error
        except RecursionError:
            raise HTTPProblem(400, "malformed JSON: nested too deeply") from None
        except JSONValueError as error:
            raise HTTPProblem(400, f"malformed JSON: {error}") from None

    def endpoint(name: str, handler, needs_body: bool, needs_auth: bool = True):
        async def respond(request: Request) -> Response:
            start = time.perf_counter()
            try:
                if needs_auth and not authorized(request):
                    raise HTTPProblem(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
                result = await handler(await read_json(request)) if needs_body else handler()
                response: Response = (
                    PlainTextResponse(result, media_type="text/plain; version=0.0.4") if isinstance(result, str)
                    else JSONResponse(result)
                )
            except ClientDisconnect:  # gone before its body arrived: nobody to answer, nothing failed
                logger.info("%s: the client disconnected before sending its whole body", name)
                service.metrics.request(name, CLIENT_CLOSED, time.perf_counter() - start)
                return Response(status_code=CLIENT_CLOSED)
            except HTTPProblem as problem:
                response = JSONResponse({"error": {"message": str(problem), "code": problem.status}},
                                        status_code=problem.status, headers=problem.headers)
            except Exception as error:  # never a bare 500 page: say what failed
                logger.exception("unexpected error in %s", name)
                response = JSONResponse({"error": {"message": f"internal error: {error}", "code": 500}}, status_code=500)
            service.metrics.request(name, response.status_code, time.perf_counter() - start)
            return response

        return respond

    routes = [
        Route("/v1/rewrite", endpoint("rewrite", service.rewrite, True), methods=["POST"]),
        Route("/v1/chat/completions", endpoint("chat", service.chat, True), methods=["POST"]),
        Route("/v1/models", endpoint("models", service.models, False), methods=["GET"]),
        Route("/health", endpoint("health", service.health, False, needs_auth=False), methods=["GET"]),
        Route("/metrics", endpoint("metrics", service.metrics.render, False), methods=["GET"]),
    ]
    async def http_error(request: Request, error) -> Response:
        # the documented error body for every answer, unknown paths and methods included
        status = getattr(error, "status_code", 500)
        detail = {404: f"no such endpoint {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return JSONResponse({"error": {"message": detail.get(status, str(getattr(error, "detail", error))),
                                       "code": status}}, status_code=status, headers=getattr(error, "headers", None))

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: http_error, 405: http_error})
    app.state.service = service
    return app
