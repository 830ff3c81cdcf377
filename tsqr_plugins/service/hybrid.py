"""The answer the OpenSearch rrf pipeline searches with (``engine_configs.rrf_pipeline``).

That pipeline sends the caller's whole match query, ``{field: options}`` (the field's name is
needed to build a query, and a ``match`` options object alone does not carry it), and writes the
service's ``query`` over the search's query: a ``hybrid`` query of the original match and the
rewritten one, which neural-search's score-ranker processor fuses by reciprocal rank. Without a
rewrite (the service's own fallback) ``query`` is the original match alone, as a search the
pipeline could not rewrite runs (the score-ranker processor passes a plain query by).
"""

from __future__ import annotations

from typing import Any

from tsqr_plugins.querydsl import rewritten_match


def whole_match(match: Any) -> tuple[str, dict] | None:
    """(field, options) of a whole match query ``{field: {"query": ..., ...}}``; None for anything
    else, a match's options object ``{"query": "...", ...}`` among them (its ``query`` is text)."""
    if not isinstance(match, dict) or len(match) != 1:
        return None
    ((field, options),) = match.items()
    if isinstance(field, str) and field and isinstance(options, dict) and isinstance(options.get("query"), str):
        return field, options
    return None


def hybrid_query(field: str, options: dict, text: str | None) -> dict:
    """``{"hybrid": {"queries": [original match, rewritten match]}}``; the original match alone
    when ``text`` is None (no rewrite). The rewritten match is ``querydsl.rewritten_match``, what
    the ``tsqr-rewrite`` pipeline and the client stages search for the same rewrite."""
    original = {"match": {field: options}}
    if text is None:
        return original
    return {"hybrid": {"queries": [original, {"match": {field: rewritten_match(options, text)}}]}}
