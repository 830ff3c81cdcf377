"""Any OpenAI-compatible chat endpoint: ``vllm serve``, ``tsqr serve``, hosted APIs."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.backends.truncation import fit_query_chars
from tsqr_plugins import deadline
from tsqr_plugins.errors import BackendError, BackendTimeout, InputError, ServerUnavailableError
from tsqr_plugins.lazy import require
from tsqr_plugins.params import GenerationParams
from tsqr_plugins.prompts import Prompt

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
# Answers a retry can fix: the server timed out reading, is busy or is starting (408, 409, 429, 503).
# A 500, 502 or 504 is that server's verdict on this request (a bug, a failed engine behind it, its
# own time budget spent): retrying repeats it and delays the search waiting on it.
RETRY_STATUS = {408, 409, 429, 503}
START_HINT = (
    "Start one, e.g. `tsqr serve --rewriter transformers --model <path>` (the shared rewrite service) or "
    "`vllm serve TongSearch/TongSearch-QR-7B --port 8000`, or point --base-url at a running server."
)


class OpenAIBackend(Backend):
    """Chat completions over HTTP from any OpenAI-compatible server (the ``openai`` extra):
    ``vllm serve``, ``tsqr serve`` (this is the Python client of the rewrite service), hosted APIs.

    Requests run ``max_concurrency`` at a time, retried with exponential backoff on connection
    errors and 408, 409, 429 and 503, never past the caller's time budget; any other error status
    is answered at once. The server's ``/models`` is checked at construction.

    Args:
        base_url: The API root, usually ending in ``/v1``.
        model: The model name the server serves; None: the first one it lists.
        api_key: Bearer token; None: ``$TSQR_API_KEY``, else ``$OPENAI_API_KEY``.
        max_concurrency: Requests in flight at once (and HTTP connections kept).
        timeout: Seconds per request.
        max_retries: Retries of a request after its first attempt.
        backoff: Seconds before the first retry, doubled for each next one (with jitter).
        health_timeout: Seconds to wait for ``/models`` to answer at construction.
        vllm_sampling: Send vLLM's extra sampling fields (``top_k``, ``repetition_penalty``); turn it
            off for servers that reject unknown fields.
        max_query_chars: Queries longer than this are cut to it (characters: there is no tokenizer).
        key_from_environment: Read the key from the environment when ``api_key`` is not given.

    Raises:
        MissingDependencyError: httpx is not installed.
        InputError: ``max_concurrency`` is below 1.
        ServerUnavailableError: No server answered in time, it refused the key, it is not an
            OpenAI-compatible API at ``base_url``, or it does not serve ``model``.
    """

    NAME = "openai"
    EXTRA = "openai"
    REQUIRES = ("httpx",)

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        model: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        health_timeout: float = 10.0,
        vllm_sampling: bool = True,
        max_query_chars: int = 24_000,
        key_from_environment: bool = True,
    ) -> None:
        httpx = require("httpx", "openai", "the openai backend")
        if max_concurrency < 1:
            raise InputError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self._httpx = httpx
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff = backoff
        self.vllm_sampling = vllm_sampling
        self.max_query_chars = max_query_chars
        if not api_key and key_from_environment:  # a client's own key; tsqr serve passes its upstream's
            api_key = os.environ.get("TSQR_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        served = self.check_server(health_timeout)
        if model is None:
            if not served:
                raise ServerUnavailableError(f"{self.base_url}/models lists no model; pass --model")
            model = served[0]
        elif served and model not in served:  # every request would be a 404, every query a fallback
            raise ServerUnavailableError(f"{self.base_url} does not serve {model!r}; it serves {served} "
                                         "(name one of them, or leave the model out to take the first)")
        self.model = model
        self.model_id = f"{self.base_url}#{model}"

    def check_server(self, deadline: float) -> list[str]:
        """Poll ``/models`` until it answers.

        Args:
            deadline: Seconds to keep trying.

        Returns:
            The ids of the models the server serves.

        Raises:
            ServerUnavailableError: No answer within ``deadline``, the key was refused (401/403),
                or ``/models`` is not found (404: the message says whether ``/v1`` is missing).
        """
        stop_at = time.monotonic() + deadline
        while True:
            try:
                response = self._client.get("/models", timeout=max(1.0, min(5.0, deadline)))
                if response.status_code in (401, 403):
                    raise ServerUnavailableError(
                        f"{self.base_url} refused the API key ({response.status_code}); set --api-key or TSQR_API_KEY"
                    )
                if response.status_code == 404:  # a server answered, at another path
                    hint = f"; the base URL usually ends in /v1 ({self.base_url}/v1)" if not self.base_url.endswith("/v1") else ""
                    raise ServerUnavailableError(f"a server at {self.base_url} answered 404 for /models: it is not an "
                                                 f"OpenAI-compatible API at this path{hint}")
                response.raise_for_status()
                return [entry["id"] for entry in response.json().get("data", [])]
            except ServerUnavailableError:
                raise
            except Exception as error:
                if time.monotonic() >= stop_at:
                    raise ServerUnavailableError(
                        f"no OpenAI-compatible server answered at {self.base_url}/models within {deadline:g} s "
                        f"({type(error).__name__}: {error}). {START_HINT}"
                    ) from error
                time.sleep(0.25)

    def request_body(self, messages: list[dict[str, str]], params: GenerationParams) -> dict[str, Any]:
        """The JSON body of one ``/chat/completions`` request.

        Args:
            messages: The chat messages.
            params: How to sample (``top_k`` and ``repetition_penalty`` only with ``vllm_sampling``).
        """
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "stop": list(params.stop),
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if self.vllm_sampling:
            body["repetition_penalty"] = params.repetition_penalty
            body["top_k"] = params.top_k if params.top_k is not None else -1
        return body

    def generate(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams) -> list[Completion]:
        return self.chat([prompt.messages(fit_query_chars(query, self.max_query_chars)) for query in queries], params)

    def chat(self, conversations: Sequence[list[dict[str, str]]], params: GenerationParams) -> list[Completion]:
        bodies = [self.request_body(messages, params) for messages in conversations]
        if len(bodies) == 1:
            return [self._complete(bodies[0])]
        budget = deadline.current()  # the pool's threads work within the caller's time budget
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(bodies))) as pool:
            return list(pool.map(lambda body: deadline.run_until(lambda: self._complete(body), budget), bodies))

    def generate_samples(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams,
                         n: int) -> list[list[Completion]]:
        """``n`` completions per query, each query one request with OpenAI's ``n``.

        Args:
            queries: The search queries, each put into ``prompt``.
            prompt: The prompt that turns a query into chat messages.
            params: How to sample.
            n: Completions per query, >= 1.
        """
        bodies = [{**self.request_body(prompt.messages(fit_query_chars(query, self.max_query_chars)), params), "n": n}
                  for query in queries]
        budget = deadline.current()
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(bodies)))) as pool:
            return list(pool.map(lambda body: deadline.run_until(lambda: self._complete(body, n), budget), bodies))

    def _complete(self, body: dict[str, Any], n: int | None = None) -> Any:
        """One request's completion (``n`` None), or its ``n`` completions (a list)."""
        for attempt in range(self.max_retries + 1):
            left = deadline.remaining()  # the caller's time budget, when it has one: the request ends with it
            if left is not None and left <= 0:
                return _failed(BackendTimeout("the time budget was spent"), n)
            try:
                response = self._client.post("/chat/completions", json=body,
                                             **({} if left is None else {"timeout": min(left, self.timeout)}))
            except self._httpx.HTTPError as error:
                # Unreachable (not a bad answer): a replica pool fails over on this type.
                failure: Exception = ServerUnavailableError(
                    f"request to {self.base_url} failed: {type(error).__name__}: {error}")
            else:
                if response.status_code == 200:
                    return parse_chat_response(response) if n is None else parse_chat_choices(response, n)
                failure = BackendError(f"{self.base_url} answered {response.status_code}: {response.text[:300]}")
                if response.status_code not in RETRY_STATUS:
                    return _failed(failure, n)
            if attempt < self.max_retries:
                time.sleep(self.backoff * 2**attempt * (0.5 + random.random()))
        return _failed(failure, n)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()


def _failed(error: Exception, n: int | None) -> Any:
    return Completion.failed(error) if n is None else [Completion.failed(error)] * n


def parse_chat_response(response: Any) -> Completion:
    try:
        choice = response.json()["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return Completion.failed(BackendError(f"malformed chat completion ({type(error).__name__}: {error})"))
    return _choice(choice)


def parse_chat_choices(response: Any, n: int) -> list[Completion]:
    """The ``n`` choices of one completion, by their ``index`` (a server may send them in any order).
    A choice the server did not send (it answered fewer, or ignores ``n``) is that sample's failure
    alone: the choices it sent are kept."""
    try:
        choices = response.json()["choices"]
        by_index = {choice["index"]: choice for choice in choices}
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return [Completion.failed(BackendError(f"malformed chat completion with n={n} "
                                               f"({type(error).__name__}: {error})"))] * n
    return [_choice(by_index[index]) if index in by_index else
            Completion.failed(BackendError(f"no choice {index} in a chat completion of {len(choices)} choices "
                                           f"for n={n}"))
            for index in range(n)]


def _choice(choice: Any) -> Completion:
    try:
        content = choice["message"]["content"]
    except (KeyError, TypeError) as error:
        return Completion.failed(BackendError(f"malformed chat completion ({type(error).__name__}: {error})"))
    if not isinstance(content, str):
        return Completion.failed(BackendError("chat completion has no text content"))
    finish = choice.get("finish_reason")
    return Completion(text=content, finish_reason=finish if isinstance(finish, str) else None)
