"""Reciprocal rank fusion of the original search and its rewritten ones in the client stages and
``tsqr proxy`` (``fusion="rrf"``): what a ``search()`` call (``split``) or a proxied ``_search``
request (``split_request``) becomes as ``_msearch`` items (the original's, then one per rewrite:
one, or with ``samples=n`` one per sample that did not fall back), which searches cannot be fused
faithfully, and the answer built from their answers (``outcome``). Pure: the I/O is in
``searchclient.py`` and ``proxyfusion.py``.

The fused answer is shaped like the engine's: ``hits.hits`` the fused page (each hit as the engine
gave it, the original's copy when several lists hold it, else the first rewrite's that holds it,
``_score`` the fused RRF score), ``hits.max_score`` the best fused score; ``hits.total``,
``aggregations``, ``suggest``, ``_shards`` and the rest from the original query's answer (what the
caller's query matched); ``took`` the engine time of all the searches; ``timed_out`` when any
timed out. Where a function takes ``rewritten``, it is one rewritten search (or answer) or a list
of them, in sample order; one gives exactly the two-item request and answer of a single rewrite.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    call: Any  # split(): the msearch() keyword arguments; split_request(): URL parameters
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
    return _checked(Split(header, body, call, 0, 0))


def _checked(split: Split) -> tuple[Split | None, str | None]:
    """``split`` with its page read from its body, or None and why the body cannot be fused."""
    body = split.body
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
    split.start, split.size = start, size
    return split, None


# A _search's query-string parameters in the proxy (``split_request``). The item header's fields
# are those MultiSearchRequest.readMultiLineFormat reads, and the _msearch call's own parameters
# apply to every item (RestMultiSearchAction.parseRequest reads max_concurrent_shard_requests and
# pre_filter_shard_size for each; its responseParams are typed_keys and rest_total_hits_as_int),
# plus the parameters every REST call takes. Read in server/src/main/java/org/{elasticsearch,
# opensearch}/{action,rest/action}/search/ (MultiSearchRequest.java, RestMultiSearchAction.java) at
# elastic/elasticsearch 03805654 and opensearch-project/OpenSearch 009e2048/0870eb6f (main-branch
# commits, not the release tags); the behaviour relied on is checked on Elasticsearch 9.2.0 and
# OpenSearch 2.19.6/3.6.0 by tests/test_proxy_fusion_live.py and its generator.
HEADER_BOOLEANS = ("request_cache", "allow_no_indices", "ignore_unavailable", "allow_partial_search_results",
                   "ccs_minimize_roundtrips")
MSEARCH_URL_PARAMS = ("rest_total_hits_as_int", "typed_keys", "max_concurrent_shard_requests",
                      "pre_filter_shard_size", "pretty", "human", "error_trace")
PARAM_REASONS = {
    "filter_path": "filter_path filters the answer that fusion needs whole",
    "index": "an index in the query string (the path names the index)",
    "format": "the answer is asked in a format other than JSON",
}


def split_request(body: dict, query: str) -> tuple[Split | None, str | None]:
    """A proxied ``_search`` (its JSON body and URL query string) as an ``_msearch`` item: the
    header from the parameters an item carries, ``call`` the ``_msearch`` URL's own parameters (as
    ``(name, value)`` pairs); or None and why it cannot be fused faithfully."""
    from urllib.parse import parse_qsl

    header: dict[str, Any] = {}
    call: list[tuple[str, str]] = []
    params = parse_qsl(query, keep_blank_values=True)
    names = [name for name, _ in params]
    for name, value in params:
        if names.count(name) > 1:
            return None, f"the query-string parameter {name!r} is given more than once"
        if name == "format" and value == "json":
            continue  # the answer is JSON anyway
        if name in HEADER_BOOLEANS:
            if value not in ("", "true", "false"):  # the engine's to refuse, as it came
                return None, f"the query-string parameter {name!r} is not true or false"
            header[name] = value != "false"  # a bare ?request_cache means true (RestRequest.paramAsBoolean)
        elif name in HEADER_PARAMS:
            if name in PARAM_REASONS:
                return None, PARAM_REASONS[name]
            header[name] = value
        elif name in MSEARCH_URL_PARAMS:
            call.append((name, value))
        elif name in UNFUSABLE:
            return None, UNFUSABLE[name]
        elif name in PARAM_REASONS:
            return None, PARAM_REASONS[name]
        else:
            return None, f"the query-string parameter {name!r} has no place in an _msearch item"
    return _checked(Split(header, dict(body), call, 0, 0))


def several(rewritten: Any) -> list:
    """``rewritten`` as a list: one rewritten search (or answer) becomes a list of one. (An engine's
    answer is a JSON object, never a list.)"""
    return list(rewritten) if isinstance(rewritten, (list, tuple)) else [rewritten]


def ndjson(original: Split, rewritten: Split | Sequence[Split]) -> bytes:
    """The ``_msearch`` body (NDJSON) holding the original search and each rewritten one, as
    :func:`item_bodies` asks them."""
    import json

    return "".join(json.dumps(line) + "\n" for line in _items(original, rewritten)).encode()


def _items(original: Split, rewritten: Split | Sequence[Split]) -> list[dict]:
    """The ``_msearch`` items, header then body: the original's first, then each rewrite's."""
    rewrites = several(rewritten)
    bodies = item_bodies(original, rewrites)
    items = [original.header, bodies[0]]
    for split, body in zip(rewrites, bodies[1:]):
        items += [split.header, body]
    return items


def _score_only(sort: Any) -> bool:
    for item in sort if isinstance(sort, list) else [sort]:
        if item in ("_score", "_score:desc"):
            continue
        if isinstance(item, dict) and list(item) == ["_score"] and item["_score"] in ("desc", {"order": "desc"}):
            continue
        return False
    return True


def item_bodies(original: Split, rewritten: Split | Sequence[Split]) -> tuple[dict, ...]:
    """The searches' bodies, the original's first: the first ``from + size`` hits of each;
    aggregations and suggestions are asked of the original only (they come from its answer)."""
    page = {"from": 0, "size": original.depth}
    dropped = ("aggs", "aggregations", "suggest", "profile")
    leans = [{k: v for k, v in split.body.items() if k not in dropped} for split in several(rewritten)]
    return ({**original.body, **page}, *({**lean, **page} for lean in leans))


def msearch_call(original: Split, rewritten: Split | Sequence[Split], body_as_keywords: bool) -> dict:
    """The keyword arguments of the one ``msearch`` call holding the original search and each
    rewritten one."""
    return {**original.call, ("searches" if body_as_keywords else "body"): _items(original, rewritten)}


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
    return {**_search_answer(item), "hits": {**item["hits"], "hits": hits}}


def _search_answer(item: dict) -> dict:
    """An ``_msearch`` item as a search answer: without the item's own ``status``."""
    return {key: value for key, value in item.items() if key != "status"}


@dataclass
class Outcome:
    """What a fused search answers, from its two answers (:func:`outcome`)."""

    answer: dict | None  # None: the original search failed; the engine's own answer to it is the answer
    fusion: dict | None  # fuse()'s metadata when fused
    reason: str | None  # why not fused
    rewrite_refused: bool = False  # the engine refused a rewritten search (a clause limit, perhaps)


def outcome(original: Any, rewritten: Any, split: Split, settings: StageSettings, took: Any,
            samples: Sequence[int] | None = None) -> Outcome:
    """The fused answer when every answer can be fused; else the original's page and why (a
    rewritten search the engine refused leaves none fused), or None when the original search
    itself failed.

    Args:
        original: The original search's answer.
        rewritten: The rewritten search's answer, or each rewritten search's (a list).
        split: The original search as an item (its page).
        settings: The fusion's settings.
        took: The engine time of all the searches, or None.
        samples: With several samples, which sample each rewritten answer is (see :func:`fuse`).
    """
    if not isinstance(original, dict) or "error" in original:
        return Outcome(None, None, "the original search failed: the engine's answer to it alone")
    answers = several(rewritten)
    for number, answer in enumerate(answers):
        why = refused(answer)
        if why:
            which = f" of sample {list(samples or range(len(answers)))[number]}" if settings.samples > 1 else ""
            return Outcome(page(original, split), None, f"the engine refused the rewritten search{which} ({why})", True)
    why = refused(original)
    if why:
        return Outcome(page(original, split), None, f"the original's answer has {why}")
    answer, info = fuse(original, answers, split, settings, took, samples)
    return Outcome(answer, info, None)


def _key(hit: dict) -> tuple[str, str]:
    return (str(hit.get("_index", "")), str(hit["_id"]))


def fuse(original: dict, rewritten: dict | Sequence[dict], split: Split, settings: StageSettings, took: Any,
         samples: Sequence[int] | None = None) -> tuple[dict, dict]:
    """The fused answer and its metadata; every answer must have passed :func:`refused`.

    The weights are ``original_weight`` for the original's list and ``rewrite_weight`` for each
    rewrite's. The metadata counts the page's hits per list: with one sample (``settings.samples``
    1) ``hits`` holds ``original``, ``rewrite`` and ``both``, ``total`` the two totals; with
    several, ``samples`` names the sample of each rewritten list, ``hits`` holds ``original``,
    ``samples`` (one count per list) and ``original_and_sample`` (hits in the original's list and
    a sample's), ``total`` the original's and each sample's.

    Args:
        original: The original search's answer.
        rewritten: The rewritten search's answer, or each one's (a list, in sample order).
        split: The original search as an item (its page).
        settings: ``rrf_k``, the weights, ``samples``.
        took: The engine time of all the searches, or None.
        samples: Which sample each rewritten answer is (default 0, 1, ...: every sample searched).
    """
    answers = several(rewritten)
    lists = [original["hits"]["hits"], *(answer["hits"]["hits"] for answer in answers)]
    # the engine's order is the ranking: scores that reproduce it (ties broken as the engine broke them)
    runs = [{_key(hit): len(hits) - rank for rank, hit in enumerate(hits)} for hits in lists]
    weights = [settings.original_weight] + [settings.rewrite_weight] * len(answers)
    scores = fusion.rrf(runs, settings.rrf_k, weights, split.depth)
    order = fusion.ranked(scores)
    by_key = {}
    for hits in reversed(lists):  # the original's copy first, then the earliest rewrite's
        by_key.update({_key(h): h for h in hits})
    # a sort value (sort: _score) would be the engine's score: dropped
    hits = [{**{k: v for k, v in by_key[key].items() if k != "sort"}, "_score": scores[key]}
            for key in order[split.start:split.depth]]
    answer = {**_search_answer(original), "hits": {**original["hits"], "hits": hits,
                                   "max_score": scores[order[0]] if order else None}}
    if took is not None:
        answer["took"] = took
    answer["timed_out"] = bool(original.get("timed_out") or any(a.get("timed_out") for a in answers))
    page_keys = [_key(hit) for hit in hits]
    info = {"method": "rrf", "k": settings.rrf_k, "weights": weights, "depth": split.depth}
    in_original = sum(key in runs[0] for key in page_keys)
    if settings.samples == 1 and len(answers) == 1:
        info["hits"] = {"original": in_original, "rewrite": sum(key in runs[1] for key in page_keys),
                        "both": sum(key in runs[0] and key in runs[1] for key in page_keys)}
        info["total"] = {"original": original["hits"].get("total"), "rewrite": answers[0]["hits"].get("total")}
        return answer, info
    info["samples"] = list(range(len(answers)) if samples is None else samples)
    info["hits"] = {"original": in_original, "samples": [sum(key in run for key in page_keys) for run in runs[1:]],
                    "original_and_sample": sum(key in runs[0] and any(key in run for run in runs[1:])
                                               for key in page_keys)}
    info["total"] = {"original": original["hits"].get("total"),
                     "samples": [a["hits"].get("total") for a in answers]}
    return answer, info


def like(response: Any, body: dict) -> Any:
    """``body`` as the client's own response type (elasticsearch-py's ``ObjectApiResponse``)."""
    if isinstance(response, dict) or not hasattr(response, "meta"):
        return body
    return type(response)(body=body, meta=response.meta)
