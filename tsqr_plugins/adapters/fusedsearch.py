"""Reciprocal rank fusion of two searches in the client stages (``fusion="rrf"``): what a
``search()`` call becomes as two ``_msearch`` items, which calls cannot be fused faithfully, and the
fused answer built from the two answers. Pure: the I/O is in ``searchclient.py``.

The fused answer is shaped like the engine's: ``hits.hits`` the fused page (each hit as the engine
gave it, the original's copy when both lists hold it, ``_score`` the fused RRF score),
``hits.max_score`` the best fused score; ``hits.total``, ``aggregations``, ``suggest``,
``_shards`` and the rest from the original query's answer (what the caller's query matched);
``took`` the engine time of both searches; ``timed_out`` when either timed out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import fusion
from .stage import StageSettings

DEFAULT_SIZE = 10  # the engines' default page size
# msearch header fields (both engines); the other search parameters an item cannot carry
HEADER_PARAMS = ("index", "routing", "preference", "search_type", "request_cache", "allow_no_indices",
                 "expand_wildcards", "ignore_unavailable", "allow_partial_search_results", "ccs_minimize_roundtrips")
MSEARCH_PARAMS = ("rest_total_hits_as_int", "typed_keys")  # query parameters _msearch takes too
TRANSPORT = ("headers", "request_timeout", "ignore", "opaque_id", "error_trace", "human", "pretty")
# elasticsearch-py's keyword names of body fields (the others are the body's own names)
KEYWORD_BODY = {"from_": "from", "source": "_source", "_source": "_source"}
BODY_FIELDS = {
    "query", "retriever", "aggs", "aggregations", "post_filter", "highlight", "min_score", "docvalue_fields",
    "stored_fields", "fields", "script_fields", "runtime_mappings", "track_total_hits", "track_scores",
    "terminate_after", "timeout", "version", "seq_no_primary_term", "indices_boost", "knn", "rank", "ext",
    "stats", "profile", "suggest", "explain", "size", "sort", "search_after", "collapse", "pit", "slice",
    "rescore", "from", "_source",
}
# body fields that make fusion unfaithful, and why
UNFUSABLE = {
    "search_after": "search_after pages a sorted list (RRF has no sort values)",
    "collapse": "collapse groups hits (RRF would mix groups and hits)",
    "pit": "a point in time belongs to one search",
    "slice": "a slice belongs to one scroll or point in time",
    "scroll": "a scroll belongs to one search",
}

NOTHING_REWRITTEN = "nothing was rewritten (the rewrite fell back): one search with the original query"


@dataclass
class Split:
    """A ``search()`` call as one ``_msearch`` item: header, body (query parts included), the
    ``_msearch`` call's own keyword arguments, and the page asked for."""

    header: dict
    body: dict
    call: dict
    start: int
    size: int

    @property
    def depth(self) -> int:
        return self.start + self.size


def split(kwargs: dict) -> tuple[Split | None, str | None]:
    """The call as an ``_msearch`` item, or None and why it cannot be fused faithfully."""
    header, call = {}, {}
    body = dict(kwargs["body"]) if isinstance(kwargs.get("body"), dict) else {}
    for name, value in kwargs.items():
        if name == "body" or value is None:
            continue
        if name in HEADER_PARAMS:
            header[name] = value
        elif name in MSEARCH_PARAMS or name in TRANSPORT:
            call[name] = value
        elif name in KEYWORD_BODY or name in BODY_FIELDS:
            body[KEYWORD_BODY.get(name, name)] = value  # a keyword (or opensearch-py's size/from_) wins
        elif name in UNFUSABLE:
            return None, UNFUSABLE[name]
        else:
            return None, f"the search argument {name!r} has no place in an _msearch item"
    for name, reason in UNFUSABLE.items():
        if body.get(name) is not None:
            return None, reason
    if body.get("explain"):
        return None, "explain gives the engine's score, not the fused one"
    if body.get("sort") is not None and not _score_only(body["sort"]):
        return None, "sorted by other than _score (RRF fuses relevance rankings)"
    start, size = body.get("from", 0), body.get("size", DEFAULT_SIZE)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (start, size)):
        return None, "from and size are not non-negative integers"
    if size == 0:
        return None, "size 0 asks for no hits"
    return Split(header, body, call, start, size), None


def _score_only(sort: Any) -> bool:
    for item in sort if isinstance(sort, list) else [sort]:
        if item in ("_score", "_score:desc"):
            continue
        if isinstance(item, dict) and list(item) == ["_score"] and item["_score"] in ("desc", {"order": "desc"}):
            continue
        return False
    return True


def item_bodies(original: Split, rewritten: Split) -> tuple[dict, dict]:
    """The two searches' bodies: the first ``from + size`` hits of each; aggregations and
    suggestions are asked of the original only (they come from its answer)."""
    page = {"from": 0, "size": original.depth}
    lean = {k: v for k, v in rewritten.body.items() if k not in ("aggs", "aggregations", "suggest", "profile")}
    return {**original.body, **page}, {**lean, **page}


def msearch_call(original: Split, rewritten: Split, body_as_keywords: bool) -> dict:
    """The keyword arguments of the one ``msearch`` call holding both searches."""
    first, second = item_bodies(original, rewritten)
    items = [original.header, first, rewritten.header, second]
    return {**original.call, ("searches" if body_as_keywords else "body"): items}


def paged(kwargs: dict, depth: int, body_as_keywords: bool, lean: bool = False) -> dict:
    """``search()`` keyword arguments asking for the first ``depth`` hits (anytime sends the two
    searches one by one, as the caller wrote them but for the page)."""
    kwargs = {k: v for k, v in kwargs.items() if k not in ("from_", "size")}
    drop = ("aggs", "aggregations", "suggest", "profile") if lean else ()
    if isinstance(kwargs.get("body"), dict):
        body = {k: v for k, v in kwargs["body"].items() if k not in drop}
        return {**kwargs, "body": {**body, "from": 0, "size": depth}}
    kwargs = {k: v for k, v in kwargs.items() if k not in drop}
    if body_as_keywords:
        return {**kwargs, "from_": 0, "size": depth}
    return {**kwargs, "body": {"from": 0, "size": depth}}


def body_of(response: Any) -> Any:
    return response if isinstance(response, dict) else getattr(response, "body", None)


def refused(item: Any) -> str | None:
    """Why an answer cannot be used as a ranking (an error, failed shards), or None."""
    if not isinstance(item, dict) or "error" in item:
        return f"an error: {str(item.get('error') if isinstance(item, dict) else item)[:300]}"
    failures = item.get("_shards", {}).get("failures")
    if failures:
        return f"shard failures: {str(failures)[:300]}"
    hits = item.get("hits", {}).get("hits")
    if not isinstance(hits, list) or not all(isinstance(h, dict) and "_id" in h for h in hits):
        return "hits without _id"
    return None


def page(item: dict, split: Split) -> dict:
    """The original's answer cut to the page the caller asked for (it was asked from 0)."""
    hits = item["hits"]["hits"][split.start:split.depth]
    return {**item, "hits": {**item["hits"], "hits": hits}}


def _key(hit: dict) -> tuple[str, str]:
    return (str(hit.get("_index", "")), str(hit["_id"]))


def fuse(original: dict, rewritten: dict, split: Split, settings: StageSettings, took: Any) -> tuple[dict, dict]:
    """The fused answer and its metadata; both answers must have passed :func:`refused`."""
    lists = [original["hits"]["hits"], rewritten["hits"]["hits"]]
    # the engine's order is the ranking: scores that reproduce it (ties broken as the engine broke them)
    runs = [{_key(hit): len(hits) - rank for rank, hit in enumerate(hits)} for hits in lists]
    weights = [settings.original_weight, settings.rewrite_weight]
    scores = fusion.rrf(runs, settings.rrf_k, weights, split.depth)
    order = fusion.ranked(scores)
    by_key = {**{_key(h): h for h in lists[1]}, **{_key(h): h for h in lists[0]}}  # the original's copy first
    # a sort value (sort: _score) would be the engine's score: dropped
    hits = [{**{k: v for k, v in by_key[key].items() if k != "sort"}, "_score": scores[key]}
            for key in order[split.start:split.depth]]
    answer = {**original, "hits": {**original["hits"], "hits": hits,
                                   "max_score": scores[order[0]] if order else None}}
    if took is not None:
        answer["took"] = took
    answer["timed_out"] = bool(original.get("timed_out") or rewritten.get("timed_out"))
    page_keys = [_key(hit) for hit in hits]
    info = {
        "method": "rrf", "k": settings.rrf_k, "weights": weights, "depth": split.depth,
        "hits": {"original": sum(key in runs[0] for key in page_keys),
                 "rewrite": sum(key in runs[1] for key in page_keys),
                 "both": sum(key in runs[0] and key in runs[1] for key in page_keys)},
        "total": {"original": original["hits"].get("total"), "rewrite": rewritten["hits"].get("total")},
    }
    return answer, info


def like(response: Any, body: dict) -> Any:
    """``body`` as the client's own response type (elasticsearch-py's ``ObjectApiResponse``)."""
    if isinstance(response, dict) or not hasattr(response, "meta"):
        return body
    return type(response)(body=body, meta=response.meta)
