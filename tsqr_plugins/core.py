"""The rewriter: queries in, rewrites out, the original always kept, fail-open by default."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.combine import DEFAULT_REPEAT, combine, combine_text
from tsqr_plugins.deadline import call_with_deadline
from tsqr_plugins.errors import BackendError, EmptyQueryError, InputError
from tsqr_plugins.params import GenerationParams
from tsqr_plugins.prompts import DEFAULT_PROMPT_ID, Prompt, get_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rewrite:
    """A rewritten query. ``text`` is the rewrite, or the original when ``fallback`` is set."""

    original: str
    text: str
    raw: str | None = None
    fallback: bool = False
    reason: str | None = None
    model: str = ""
    prompt_id: str = ""
    cached: bool = False

    def combined(self, mode: str = "replace", repeat: int = DEFAULT_REPEAT) -> str | tuple[str, str]:
        """The search query to send for ``mode`` (see :func:`tsqr_plugins.combine.combine`)."""
        return combine(self.original, self.text, mode, repeat)

    def combined_text(self, mode: str = "replace", repeat: int = DEFAULT_REPEAT) -> str:
        """One query string for ``mode`` (``both`` gives the rewrite; see :func:`combine_text`)."""
        return combine_text(self.original, self.text, mode, repeat)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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

    ``strict=False`` (the default) is fail-open: when the backend errors, times out
    (``timeout`` seconds for a whole batch) or returns something unparseable, the result is the
    original query with ``fallback=True`` and a logged warning. ``strict=True`` raises instead.
    Caller mistakes (empty queries, a query missing from a rewrite file) always raise.
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
        return self.backend.model_id

    def rewrite(self, query: str) -> Rewrite:
        return self.rewrite_batch([query])[0]

    def rewrite_batch(self, queries: Sequence[str]) -> list[Rewrite]:
        validate_queries(queries)
        unique = list(dict.fromkeys(queries))  # one generation per distinct query
        completions = self._generate(unique)
        by_query = {query: self._to_rewrite(query, completion) for query, completion in zip(unique, completions)}
        return [by_query[query] for query in queries]

    def _generate(self, queries: list[str]) -> list[Completion]:
        if not queries:
            return []
        try:
            completions = call_with_deadline(
                lambda: self.backend.generate(queries, self.prompt, self.params), self.timeout
            )
        except InputError:
            raise
        except Exception as error:  # fail-open covers every backend failure
            if self.strict:
                raise as_backend_error(error)
            return [Completion.failed(error)] * len(queries)
        if len(completions) != len(queries):
            error = BackendError(
                f"backend {self.backend.NAME} returned {len(completions)} completions for {len(queries)} queries"
            )
            if self.strict:
                raise error
            return [Completion.failed(error)] * len(queries)
        return completions

    def _to_rewrite(self, query: str, completion: Completion) -> Rewrite:
        common = {"original": query, "model": self.model, "prompt_id": self.prompt.id, "cached": completion.cached}
        error = completion.error
        if error is None:
            try:
                return Rewrite(text=self.prompt.parse(completion.text or ""), raw=completion.text, **common)
            except BackendError as parse_error:
                error = parse_error
        if isinstance(error, InputError):
            raise error
        if self.strict:
            raise as_backend_error(error)
        reason = f"{type(error).__name__}: {error}"
        logger.warning("rewrite fell back to the original query (%s): %.80r", reason, query)
        return Rewrite(text=query, raw=completion.text, fallback=True, reason=reason, **common)
