"""Client-side query-transform stage around an Elasticsearch or OpenSearch Python client.

``search()`` rewrites the text of the ``match``/``multi_match`` queries in the request (the
fields are configurable) and sends everything else untouched; every other client method is
passed through. The engine-specific classes are in ``elasticsearch.py`` and ``opensearch.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..core import Rewrite, Rewriter, as_backend_error
from ..errors import InputError
from . import querydsl, stage
from .stage import Plan, StageSettings, StatsKey

logger = logging.getLogger(__name__)


def _query_of(kwargs: dict) -> tuple[dict | None, Any]:
    """The query of a ``search(**kwargs)`` call (``body=`` or ``query=`` style) and how to put one back."""
    body = kwargs.get("body")
    if isinstance(body, dict) and isinstance(body.get("query"), dict):
        return body["query"], lambda query: {**kwargs, "body": {**body, "query": query}}
    if isinstance(kwargs.get("query"), dict):
        return kwargs["query"], lambda query: {**kwargs, "query": query}
    return None, None


def single_index(index: Any) -> str | None:
    """The index ``_termvectors`` can ask, or None for several indices / patterns."""
    if isinstance(index, (list, tuple)) and len(index) == 1:
        index = index[0]
    if isinstance(index, str) and index and not any(ch in index for ch in ",*"):
        return index
    return None


def annotate(response: Any, info: dict) -> Any:
    """Add the stage's metadata to a search response under ``"tsqr"``."""
    body = response if isinstance(response, dict) else getattr(response, "body", None)
    if isinstance(body, dict):
        body["tsqr"] = info
    return response


class _Stage:
    """What the sync and async clients share: settings, the rewriter, the latest rewrites."""

    def __init__(self, client: Any, rewriter: Rewriter | None, *, fields=None, scoring: str = "match",
                 mode: str = "replace", repeat: int = 5, clause_budget: int = querydsl.DEFAULT_CLAUSE_BUDGET,
                 original_boost: float = 1.0, rewrite_boost: float = 1.0, annotate_response: bool = True):
        if rewriter is not None and not isinstance(rewriter, Rewriter):
            raise InputError(f"rewriter must be a tsqr_plugins.Rewriter, got {type(rewriter).__name__}")
        self.client = client
        self.rewriter = rewriter
        fields = None if fields is None else tuple([fields] if isinstance(fields, str) else fields)
        self.settings = StageSettings(fields, scoring, mode, repeat, clause_budget, original_boost, rewrite_boost)
        self.annotate_response = annotate_response
        self.last_rewrites: list[Rewrite] = []

    def __getattr__(self, name):
        # Every other client method (index, bulk, indices, close, ...) is the wrapped client's.
        return getattr(self.__dict__["client"], name)

    def _plan(self, kwargs: dict) -> Plan | None:
        query, _ = _query_of(kwargs)
        if query is None or self.rewriter is None:
            return None
        plan = stage.plan(query, self.settings)
        return plan if plan.leaves else None

    def _finish(self, plan: Plan, kwargs: dict, stats: dict[StatsKey, dict | None]) -> tuple[dict, dict]:
        new_query, info = stage.apply(plan, self.settings, stats)
        _, rebuild = _query_of(kwargs)
        return rebuild(new_query), info

    def _failed(self, error: Exception) -> dict:
        """Fail-open for anything our stage breaks on: the caller's search goes out untouched."""
        if isinstance(error, InputError):
            raise error
        if self.rewriter is not None and self.rewriter.strict:
            raise as_backend_error(error)
        logger.warning("query rewriting failed; searching with the original query (%s: %s)",
                       type(error).__name__, error)
        return {"rewritten": 0, "fallback": 1, "error": f"{type(error).__name__}: {error}"}

    def _termvectors_failed(self, index: str, error: Exception) -> None:
        logger.warning("_termvectors on %s failed, BM25Q falls back to match (%s)", index, error)


class RewritingSearchClient(_Stage):
    """A synchronous client (``elasticsearch.Elasticsearch`` or ``opensearchpy.OpenSearch``) with rewriting."""

    def search(self, **kwargs):
        request, info = kwargs, None
        try:
            plan = self._plan(kwargs)
            if plan is not None:
                plan.rewrites = self.rewriter.rewrite_batch(plan.texts)
                self.last_rewrites = plan.rewrites
                index = single_index(kwargs.get("index"))
                stats = {key: self._termvectors(index, key) for key in stage.stats_needed(plan, self.settings)}
                request, info = self._finish(plan, kwargs, stats)
        except Exception as error:
            request, info = kwargs, self._failed(error)
        response = self.client.search(**request)
        return annotate(response, info) if info is not None and self.annotate_response else response

    def _termvectors(self, index: str | None, key: StatsKey) -> dict | None:
        if index is None:
            return None
        text, fields = key
        try:
            response = self.client.termvectors(index=index, body=querydsl.termvectors_body(text, list(fields)))
        except Exception as error:  # the search still goes out, with match scoring
            self._termvectors_failed(index, error)
            return None
        return dict(getattr(response, "body", response))


class AsyncRewritingSearchClient(_Stage):
    """An async client (``AsyncElasticsearch`` / ``AsyncOpenSearch``): the rewrite runs in a worker
    thread, so the event loop keeps serving while the model generates."""

    async def search(self, **kwargs):
        request, info = kwargs, None
        try:
            plan = self._plan(kwargs)
            if plan is not None:
                plan.rewrites = await asyncio.to_thread(self.rewriter.rewrite_batch, plan.texts)
                self.last_rewrites = plan.rewrites
                index = single_index(kwargs.get("index"))
                keys = stage.stats_needed(plan, self.settings)
                answers = await asyncio.gather(*(self._termvectors(index, key) for key in keys))
                request, info = self._finish(plan, kwargs, dict(zip(keys, answers)))
        except Exception as error:
            request, info = kwargs, self._failed(error)
        response = await self.client.search(**request)
        return annotate(response, info) if info is not None and self.annotate_response else response

    async def _termvectors(self, index: str | None, key: StatsKey) -> dict | None:
        if index is None:
            return None
        text, fields = key
        try:
            response = await self.client.termvectors(index=index, body=querydsl.termvectors_body(text, list(fields)))
        except Exception as error:
            self._termvectors_failed(index, error)
            return None
        return dict(getattr(response, "body", response))
