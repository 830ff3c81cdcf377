"""The rewriter: queries in, rewrites out, the original always kept, fail-open by default."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from tsqr_plugins.backends.base import Backend, Completion, n_per_query, one_per_query
from tsqr_plugins.combine import DEFAULT_REPEAT, combine, combine_text
from tsqr_plugins.deadline import call_with_deadline
from tsqr_plugins.errors import BackendError, EmptyQueryError, InputError
from tsqr_plugins.params import GenerationParams
from tsqr_plugins.prompts import DEFAULT_PROMPT_ID, Prompt, get_prompt
from tsqr_plugins.text import is_unicode_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rewrite:
    """A rewritten query, always carrying its original.

    Attributes:
        original: The query as the caller gave it.
        text: The rewrite to search with; the original itself when ``fallback`` is set.
        raw: The model's completion before parsing (think mode keeps its ``<think>`` part here);
            None when there was none.
        fallback: True when rewriting failed and ``text`` is the original.
        reason: Why it fell back (``"<ErrorType>: <message>"``); None otherwise.
        model: The backend's ``model_id`` (e.g. ``"http://127.0.0.1:8000/v1#tsqr-rewrite"``).
        prompt_id: The id of the prompt that made it (see ``PROMPTS``).
        cached: True when the completion came from the rewrite cache.
    """

    original: str
    text: str
    raw: str | None = None
    fallback: bool = False
    reason: str | None = None
    model: str = ""
    prompt_id: str = ""
    cached: bool = False

    def combined(self, mode: str = "replace", repeat: int = DEFAULT_REPEAT) -> str | tuple[str, str]:
        """The search query to send, see :func:`tsqr_plugins.combine.combine`.

        Args:
            mode: ``"replace"`` (the rewrite alone, the paper's), ``"concat"`` or ``"both"``.
            repeat: ``concat`` only: how many times the original goes before the rewrite (default 5).

        Returns:
            One string, or ``(original, rewrite)`` for ``both``.
        """
        return combine(self.original, self.text, mode, repeat)

    def combined_text(self, mode: str = "replace", repeat: int = DEFAULT_REPEAT) -> str:
        """One query string, for hosts that take a single text: like :meth:`combined`, but
        ``both`` gives the rewrite.

        Args:
            mode: ``"replace"``, ``"concat"`` or ``"both"``.
            repeat: ``concat`` only: how many times the original goes before the rewrite (default 5).
        """
        return combine_text(self.original, self.text, mode, repeat)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


def join_samples(samples: Sequence[Rewrite]) -> Rewrite:
    """Several rewrites of one query as one, the way ``tsqr eval --samples`` and ``tsqr serve``'s
    ``n`` search them with replace, concat or adaptive: the samples' texts joined in order, a
    fallen-back sample's text being the original.

    Args:
        samples: One query's rewrites, sample 0 first (:meth:`Rewriter.rewrite_samples`' row).

    Returns:
        The one rewrite; a fallback only when every sample fell back, and then sample 0 itself
        (its text the original, once: a fallback's text is its query).

    Raises:
        InputError: ``samples`` is empty.
    """
    if not samples:
        raise InputError("join_samples needs at least one rewrite")
    if len(samples) == 1 or all(sample.fallback for sample in samples):
        return samples[0]
    return replace(samples[0], text=" ".join(sample.text for sample in samples), fallback=False, reason=None)


def fused_samples(samples: Sequence[Rewrite]) -> list[Rewrite]:
    """The samples whose own searches ``rrf`` fuses with the original's, in every host: those that
    did not fall back (a fallback's text is the original, already searched and fused; searching it
    again would weigh the original once more for each failed sample).

    Args:
        samples: One query's rewrites (:meth:`Rewriter.rewrite_samples`' row).

    Returns:
        The samples that did not fall back, in order; none when every sample fell back (the
        original's list alone is the answer).
    """
    return [sample for sample in samples if not sample.fallback]


def sample_fields(sample: Rewrite) -> dict[str, Any]:
    """One sample as every host's metadata names it (the client stages' ``tsqr.queries[i].samples``,
    ``tsqr serve``'s ``samples``): its ``text`` (its query on a fallback), ``fallback`` (and
    ``reason``), ``cached``.

    Args:
        sample: One of a query's rewrites.
    """
    fields: dict[str, Any] = {"text": sample.text, "fallback": sample.fallback, "cached": sample.cached}
    if sample.fallback:
        fields["reason"] = sample.reason
    return fields


def check_samples(n: Any) -> int:
    """``n`` as given when it is a whole number of rewrites per query (>= 1), else InputError."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"samples must be an integer >= 1, got {n!r}")
    return n


def validate_queries(queries: Sequence[str]) -> None:
    """Reject non-strings and empty or whitespace-only queries, naming the first offender."""
    if isinstance(queries, str):
        raise InputError("rewrite_batch takes a sequence of queries, not one string; use rewrite()")
    for index, query in enumerate(queries):
        if not isinstance(query, str):
            raise InputError(f"query {index} is a {type(query).__name__}, not a string")
        if not query.strip():
            raise EmptyQueryError(f"query {index} is empty or whitespace only; there is nothing to rewrite")


def as_backend_error(error: Exception) -> BackendError:
    """The error itself when it is a BackendError, else one wrapping it (for ``strict``)."""
    if isinstance(error, BackendError):
        return error
    wrapped = BackendError(f"{type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped


class Rewriter:
    """TongSearch-QR query rewriting over any backend.

    Fail-open by default: when the backend errors, times out or returns something unparseable,
    the result is the original query with ``fallback=True`` and a logged warning. Caller mistakes
    (empty queries, a query missing from a rewrite file) always raise.

    Args:
        backend: What generates the completions (see :func:`load_backend`, :func:`with_cache`).
        prompt: A prompt id from ``PROMPTS`` or a :class:`Prompt`; default ``"tsqr-v1"``, the paper's.
        params: A preset name from ``PRESETS`` (default ``"paper"``) or :class:`GenerationParams`.
        strict: Raise :class:`BackendError` instead of falling back to the original query.
        timeout: Seconds one ``rewrite_batch`` call may take, for the whole batch; None: no limit.
            Past it every query of the batch falls back (or, with ``strict``, BackendTimeout).
    """

    def __init__(
        self,
        backend: Backend,
        prompt: str | Prompt = DEFAULT_PROMPT_ID,
        params: str | GenerationParams = "paper",
        *,
        strict: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.backend = backend
        self.prompt = get_prompt(prompt)
        self.params = GenerationParams.preset(params) if isinstance(params, str) else params
        self.strict = strict
        self.timeout = timeout

    @property
    def model(self) -> str:
        """The backend's ``model_id``, as each ``Rewrite.model`` carries it."""
        return self.backend.model_id

    def rewrite(self, query: str) -> Rewrite:
        """One query's rewrite: ``rewrite_batch([query])[0]``.

        Args:
            query: The search query, a non-empty string.

        Raises:
            EmptyQueryError: ``query`` is empty or whitespace only.
            BackendError: With ``strict``, when the backend fails.
        """
        return self.rewrite_batch([query])[0]

    def rewrite_batch(self, queries: Sequence[str]) -> list[Rewrite]:
        """The rewrites of ``queries``, in order, from one backend call; repeated queries are
        generated once.

        Args:
            queries: Non-empty query strings (a sequence; a single string is refused).

        Returns:
            One :class:`Rewrite` per query, each carrying its original.

        Raises:
            InputError: A query is not a string, or ``queries`` is one string.
            EmptyQueryError: A query is empty or whitespace only.
            BackendError: With ``strict``, when the backend fails for any query.
        """
        validate_queries(queries)
        unique = list(dict.fromkeys(queries))  # one generation per distinct query
        completions = self._generate(unique)
        by_query = {query: self._to_rewrite(query, completion) for query, completion in zip(unique, completions)}
        return [by_query[query] for query in queries]

    def rewrite_samples(self, queries: Sequence[str], n: int) -> list[list[Rewrite]]:
        """``n`` rewrites of each query, sampled in one backend call where the engine can (OpenAI's
        and vLLM's ``n``), each cached under its sample index; the first is :meth:`rewrite_batch`'s.

        Args:
            queries: Non-empty query strings.
            n: Rewrites per query, >= 1.

        Returns:
            Per query, its ``n`` rewrites in sample order (fallbacks as in :meth:`rewrite_batch`).

        Raises:
            InputError: ``n`` below 1, or a query is not a string.
            EmptyQueryError: A query is empty or whitespace only.
            BackendError: With ``strict``, when the backend fails for any query.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"n must be an integer >= 1, got {n!r}")
        validate_queries(queries)
        unique = list(dict.fromkeys(queries))
        if n == 1:
            samples = [[completion] for completion in self._generate(unique)]
        else:
            samples = self._generate_samples(unique, n)
        by_query = {query: [self._to_rewrite(query, completion) for completion in row]
                    for query, row in zip(unique, samples)}
        return [by_query[query] for query in queries]

    def _generate_samples(self, queries: list[str], n: int) -> list[list[Completion]]:
        try:
            return n_per_query(call_with_deadline(
                lambda: self.backend.generate_samples(queries, self.prompt, self.params, n), self.timeout
            ), len(queries), n, self.backend.NAME)
        except InputError:
            raise
        except Exception as error:
            if self.strict:
                raise as_backend_error(error)
            return [[Completion.failed(error)] * n for _ in queries]

    def _generate(self, queries: list[str]) -> list[Completion]:
        if not queries:
            return []
        try:
            return one_per_query(call_with_deadline(
                lambda: self.backend.generate(queries, self.prompt, self.params), self.timeout
            ), len(queries), self.backend.NAME)
        except InputError:
            raise
        except Exception as error:  # fail-open covers every backend failure
            if self.strict:
                raise as_backend_error(error)
            return [Completion.failed(error)] * len(queries)

    def _to_rewrite(self, query: str, completion: Completion) -> Rewrite:
        return finish(query, completion, self.prompt, self.model, self.strict)


def finish(query: str, completion: Completion, prompt: Prompt, model: str, strict: bool = False) -> Rewrite:
    """The one way a completion becomes a rewrite, in every surface (``Rewriter``, and through it
    the adapters and the proxy; ``tsqr serve``): the prompt's parse of the model's text, which must
    be text; on any failure the original query, marked ``fallback`` with the reason, or with
    ``strict`` the failure raised as a BackendError. A caller's mistake (InputError) always raises."""
    common = {"original": query, "model": model, "prompt_id": prompt.id, "cached": completion.cached}
    error = completion.error
    if error is None:
        try:
            text = prompt.parse(completion.text or "")
            if not is_unicode_text(text):  # e.g. an upstream's JSON with "\ud800": no encoder takes it
                raise BackendError("the model's output is not text (it holds a lone surrogate)")
            return Rewrite(text=text, raw=completion.text, **common)
        except BackendError as parse_error:
            error = parse_error
    if isinstance(error, InputError):
        raise error
    if strict:
        raise as_backend_error(error)
    reason = f"{type(error).__name__}: {error}"
    logger.warning("rewrite fell back to the original query (%s): %.80r", reason, query)
    raw = completion.text if completion.text is None or is_unicode_text(completion.text) else None
    return Rewrite(text=query, raw=raw, fallback=True, reason=reason, **common)
