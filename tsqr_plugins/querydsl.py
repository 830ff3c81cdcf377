"""Query DSL for Elasticsearch and OpenSearch: find the text queries to rewrite, build their bodies.

Pure functions, shared by both engines, the Python client stages and the ``_search`` proxy.
Model output only ever becomes the value of a ``match``/``multi_match`` ``query`` or of a
``term`` clause — never query-string syntax, a script or a field name — and every built query
is bounded by a clause budget below the engines' ``max_clause_count`` (1,024 by default).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import bm25q
from .analyzer import tokenize
from .combine import adaptive_copies
from .core import Rewrite
from .errors import InputError

SCORINGS = ("match", "bm25q")
# OpenSearch's default indices.query.bool.max_clause_count; Elasticsearch 8+ sizes its limit from
# the heap and never below it (9.2 took 25,000 clauses on a 512 MB heap): the floor both keep.
MAX_CLAUSE_COUNT = 1024
DEFAULT_CLAUSE_BUDGET = 1000  # leaves room for the clauses of the rest of the caller's query
# A field pattern (title_*), or a multi_match without fields (the index's default fields, * unless
# set), queries every field it matches, each with every token; the stage cannot see how many, so
# it counts each as this many. More still passes the limit: the stages then search with the
# original query (passed_clause_limit).
FIELDS_PER_PATTERN = 8
BM25_K1, BM25_B = bm25q.K1, bm25q.B

# Sub-queries that only exclude or filter documents: a long rewrite there would change which
# documents are excluded, not how they rank, so they are left alone unless asked for.
FILTER_CONTEXTS = {("bool", "filter"), ("bool", "must_not"), ("boosting", "negative"), ("constant_score", "filter")}
# _termvectors on an artificial document reads one shard's statistics, chosen at random unless the
# request is routed: a fixed routing value makes BM25Q weights the same on every call.
TERMVECTORS_ROUTING = "tsqr"

# Compound queries and where their sub-queries live; anything else is left untouched.
_CHILDREN = {
    "bool": ("must", "should", "filter", "must_not"),
    "dis_max": ("queries",),
    "constant_score": ("filter",),
    "function_score": ("query",),
    "boosting": ("positive", "negative"),
    "nested": ("query",),
    "has_child": ("query",),
    "has_parent": ("query",),
    "hybrid": ("queries", "filter"),  # OpenSearch (neural-search): its sub-queries, scored apart and combined
}
# Elasticsearch retrievers (8.14+; elasticsearch-specification _types/Retriever.ts): where their
# query, child retrievers and filters live.
_RETRIEVER_CHILDREN = ("retriever",)  # text_similarity_reranker, rule, rescorer, pinned, diversify
# Text-bearing queries the stages leave as written, and why: said in the metadata, never silently.
NOT_REWRITTEN = {
    "query_string": "its text is query syntax, and model output never becomes syntax",
    "simple_query_string": "its text is query syntax, and model output never becomes syntax",
    "match_phrase": "a phrase: a rewrite is not the same phrase",
    "match_phrase_prefix": "a phrase: a rewrite is not the same phrase",
    "match_bool_prefix": "its last word is a prefix the user is typing",
    "intervals": "positional rules written for the original words",
    "semantic": "embedded by the engine's model, which expects the user's words",
    "neural": "embedded by the engine's model, which expects the user's words",
    "sparse_vector": "embedded by the engine's model, which expects the user's words",
    "text_expansion": "embedded by the engine's model, which expects the user's words",
    "knn": "a vector search",
}


@dataclass
class TextQuery:
    """A ``match`` or ``multi_match`` leaf of the caller's query: what to rewrite and where."""

    container: dict | list  # the parent holding the leaf, for replacement in place (in a copy)
    key: Any
    kind: str  # "match" | "multi_match"
    text: str
    fields: list[str]
    boost: float | None = None
    options: dict = field(default_factory=dict)  # the leaf's other parameters (multi_match type, ...)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(field_name(spec) for spec in self.fields)


def field_name(spec: str) -> str:
    return spec.split("^", 1)[0]  # "title^2" -> "title"


def _leaf(node: Any) -> tuple[str, str, list[str], dict] | None:
    """(kind, text, fields, options) when ``node`` is a rewritable text query, else None."""
    if not isinstance(node, dict) or len(node) != 1:
        return None
    (kind, spec), = node.items()
    if kind == "match" and isinstance(spec, dict) and len(spec) == 1:
        (name, value), = spec.items()
        if isinstance(value, str):
            return kind, value, [name], {}
        if isinstance(value, dict) and isinstance(value.get("query"), str):
            return kind, value["query"], [name], {k: v for k, v in value.items() if k != "query"}
    if kind in ("multi_match", "combined_fields") and isinstance(spec, dict) and isinstance(spec.get("query"), str):
        fields = spec.get("fields") or []
        if isinstance(fields, list) and all(isinstance(f, str) for f in fields):
            return kind, spec["query"], list(fields), {k: v for k, v in spec.items() if k != "query"}
    return None


@dataclass
class Found:
    """What a search body holds: the text queries to rewrite, and those left as written (why)."""

    leaves: list[TextQuery] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def find_text_queries(holder: dict, fields: Iterable[str] | None = None,
                      include_filters: bool = False) -> list[TextQuery]:
    """The ``match``/``multi_match``/``combined_fields`` leaves of a search body's ``query`` and
    ``retriever`` (Elasticsearch retrievers: every standard retriever's query, and the multi-field
    ``query`` text of ``rrf``/``linear``) on the given fields."""
    return find_in_search(holder, fields, include_filters).leaves


def find_in_search(holder: dict, fields: Iterable[str] | None = None, include_filters: bool = False) -> Found:
    """``fields=None`` takes every text query; otherwise a query on one of them, or a
    ``multi_match`` naming one of them. Walks only the documented compound queries and retrievers,
    and not into filter contexts (``FILTER_CONTEXTS``, a retriever's ``filter``) unless
    ``include_filters``."""
    wanted = None if fields is None else set(fields)
    found = Found()

    def take(container, key, kind, text, names, options):
        if wanted is None or wanted & {field_name(n) for n in names}:
            boost = number(options.get("boost"))
            found.leaves.append(TextQuery(container, key, kind, text, names, boost, options))

    def visit(container, key):
        node = container[key]
        leaf = _leaf(node)
        if leaf is not None:
            take(container, key, *leaf)
            return
        if not isinstance(node, dict) or len(node) != 1:
            return
        (kind, spec), = node.items()
        if kind in NOT_REWRITTEN:
            found.skipped.append({"query": kind, "reason": NOT_REWRITTEN[kind]})
            return
        if not isinstance(spec, dict):
            return
        for child_key in _CHILDREN.get(kind, ()):
            if (kind, child_key) in FILTER_CONTEXTS | {("hybrid", "filter")} and not include_filters:
                continue
            visit_each(spec, child_key, visit)

    def visit_retriever(container, key):
        node = container[key]
        if not isinstance(node, dict) or len(node) != 1:
            return
        (kind, spec), = node.items()
        if not isinstance(spec, dict):
            return
        if include_filters:
            visit_each(spec, "filter", visit)
        if kind == "standard" and isinstance(spec.get("query"), dict):
            visit(spec, "query")
        elif kind in ("rrf", "linear"):
            if isinstance(spec.get("query"), str):  # the multi-field format (9.1+): a text and fields
                names = spec.get("fields") or []
                if isinstance(names, list) and all(isinstance(n, str) for n in names):
                    take(spec, "query", "text", spec["query"], list(names), {})
            entries = spec.get("retrievers")
            for index, entry in enumerate(entries if isinstance(entries, list) else []):
                # an entry is a retriever, or {"retriever": ..., "weight": ...}
                if isinstance(entry, dict) and "retriever" in entry:
                    visit_retriever(entry, "retriever")
                else:
                    visit_retriever(entries, index)
        elif kind == "knn":
            found.skipped.append({"retriever": kind, "reason": NOT_REWRITTEN["knn"]})
        else:
            if kind == "text_similarity_reranker" and isinstance(spec.get("inference_text"), str):
                found.skipped.append({"retriever": kind, "field": "inference_text",
                                      "reason": "the reranker's model compares the user's words with each document"})
            for child_key in _RETRIEVER_CHILDREN:
                if isinstance(spec.get(child_key), dict):
                    visit_retriever(spec, child_key)

    if "query" in holder:
        if not isinstance(holder["query"], dict):
            raise InputError(f"a search query must be a JSON object, got {type(holder['query']).__name__}")
        visit(holder, "query")
    if isinstance(holder.get("retriever"), dict):
        visit_retriever(holder, "retriever")
    return found


def visit_each(spec: dict, key: str, visit) -> None:
    """Visit ``spec[key]``: one query, or each of a list of them."""
    child = spec.get(key)
    if isinstance(child, list):
        for index in range(len(child)):
            visit(child, index)
    elif isinstance(child, dict):
        visit(spec, key)


SEARCH_PARTS = ("query", "retriever")


def copy_with_text_queries(search: dict, fields: Iterable[str] | None,
                           include_filters: bool = False) -> tuple[dict, Found]:
    """A deep copy of the search body's ``query`` and ``retriever``, and what they hold: replacing
    the leaves never touches the caller's body."""
    holder = {key: copy.deepcopy(search[key]) for key in SEARCH_PARTS if key in search}
    return holder, find_in_search(holder, fields, include_filters)


def concrete_fields(names: Iterable[str]) -> bool:
    """Whether ``_termvectors`` can take these field names: at least one, no wildcard patterns."""
    names = list(names)
    return bool(names) and not any("*" in name or "?" in name for name in names)


# -- building queries ------------------------------------------------------------------------


@dataclass
class Built:
    """A built query and what was done to fit it (for the response metadata)."""

    query: dict | str  # a str for a retriever's multi-field query text
    info: dict


def clean_text(text: str) -> str:
    """Surrogate pairs joined, lone surrogates replaced: every JSON encoder and engine accepts the result."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def cap_tokens(text: str, max_tokens: int) -> tuple[str, int]:
    """``text`` cut to its first ``max_tokens`` Lucene standard tokens, and how many were dropped.

    Joining the kept tokens with spaces gives the same token stream under the standard tokenizer,
    so a ``match`` on it cannot expand past the clause limit.
    """
    tokens = tokenize(text)
    if len(tokens) <= max_tokens:
        return text, 0
    return " ".join(tokens[:max_tokens]), len(tokens) - max_tokens


def queried_fields(fields: list[str]) -> tuple[int, bool]:
    """(how many fields a text query's tokens go to, as far as can be told; whether that is a guess)."""
    names = [field_name(spec) for spec in fields]
    patterns = sum(1 for name in names if "*" in name or "?" in name)
    if not names:
        return FIELDS_PER_PATTERN, True
    return len(names) - patterns + patterns * FIELDS_PER_PATTERN, patterns > 0


def passed_clause_limit(error_text: str) -> bool:
    """Whether an engine refused a search for its clause count (OpenSearch: "maxClauseCount is set
    to 1024"; Elasticsearch: too_many_clauses / too_many_nested_clauses, naming maxClauseCount)."""
    return "maxClauseCount" in error_text or "too_many_clauses" in error_text or "too_many_nested_clauses" in error_text


def match_query(text: str, fields: list[str], budget: int, options: dict | None = None, kind: str = "match") -> Built:
    """Plain BM25: ``match`` (or ``multi_match``/``combined_fields`` keeping their fields and type),
    fuzziness, ``operator`` and ``minimum_should_match`` off. ``kind`` "text" (a retriever's
    multi-field ``query``) builds the capped text alone."""
    count, guessed = queried_fields(fields)
    kept, dropped = cap_tokens(text, max(1, budget // count))
    info = {"scoring": "match", "dropped_tokens": dropped}
    if guessed:
        info["fields_guessed"] = True  # patterns counted as FIELDS_PER_PATTERN fields each
    if kind == "text":
        return Built(kept, info)
    if kind in ("multi_match", "combined_fields"):
        kept_options = ("fields", "type", "tie_breaker", "analyzer") if kind == "multi_match" else ("fields",)
        spec = {k: v for k, v in (options or {}).items() if k in kept_options}
        return Built({kind: {**spec, "query": kept}}, info)
    spec = {k: v for k, v in (options or {}).items() if k == "analyzer"}
    return Built({"match": {fields[0]: {**spec, "query": kept}}}, info)


def number(value: Any) -> float | None:
    """A number as the engines read one: a JSON number, or a string holding one ("2")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            return None
        return parsed if math.isfinite(parsed) else None
    return None


def rewritten_match(original: dict, text: str | None, budget: int = DEFAULT_CLAUSE_BUDGET) -> dict:
    """The options object of a ``match`` on one field (``{"query": ..., "boost": ...}``), rewritten
    as the client stages rewrite it: the text capped to ``budget`` tokens, ``analyzer`` and ``boost``
    kept, everything else (``operator``, ``minimum_should_match``, fuzziness) dropped, since it was
    meant for the original words. ``text`` None (a fallback): the original as it came.

    The OpenSearch search pipeline writes this object in place of the caller's, so both stages
    search the same query for the same rewrite."""
    if text is None:
        return original
    built = match_query(text, ["field"], budget, original, kind="match").query["match"]["field"]
    boost = number(original.get("boost"))
    if boost is not None and boost != 1:
        built["boost"] = boost
    return built


def termvectors_body(text: str, fields: list[str]) -> dict:
    """The ``_termvectors`` request analysing ``text`` as the index does, with document frequencies."""
    return {
        "doc": {name: text for name in fields},
        "fields": fields,
        "term_statistics": True,
        "field_statistics": True,
        "positions": False,
        "offsets": False,
        "payloads": False,
    }


class MalformedTermVectors(ValueError):
    """A ``_termvectors`` answer without the statistics BM25Q needs."""


def bm25q_weights(termvectors: dict, text_field: str, k1: float = BM25_K1, b: float = BM25_B) -> dict[str, float]:
    """Each query term's query-side BM25 weight from a ``_termvectors`` answer (BRIGHT's formula).

    weight = (ln(N + 1) - ln(df + 0.5)) * tf / (tf + k1 (1 - b + b |q| / avgdl)), with N and avgdl
    from the field statistics, |q| counting the query terms the index knows; unknown terms drop out.
    An answer for a text none of whose terms the field holds has no term vector for it (``{}``);
    an answer without the statistics raises MalformedTermVectors.
    """
    if not isinstance(termvectors, dict) or not isinstance(termvectors.get("term_vectors", {}), dict) \
            or not ("term_vectors" in termvectors or "found" in termvectors):
        raise MalformedTermVectors("not a _termvectors answer")
    if text_field not in termvectors.get("term_vectors", {}):
        return {}  # the analysed text left no term in this field (all stop words, say)
    try:
        vector = termvectors["term_vectors"][text_field]
        stats = vector["field_statistics"]
        documents, total = int(stats["doc_count"]), int(stats["sum_ttf"])
        terms = {t: (int(v["term_freq"]), int(v.get("doc_freq", 0) or 0)) for t, v in vector["terms"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise MalformedTermVectors(f"{type(error).__name__}: {error}") from None
    known = {t: (tf, df) for t, (tf, df) in terms.items() if df > 0 and tf > 0}
    if not known or documents <= 0:
        return {}
    return bm25q.term_weights({t: tf for t, (tf, _) in known.items()}, lambda t: bm25q.idf(documents, known[t][1]),
                              total / documents, k1, b)


def bm25q_query(weights: dict[str, float], text_field: str, budget: int) -> Built:
    """``bool.should`` of ``term`` clauses boosted by their weight, the lowest dropped past ``budget``."""
    ranked = sorted(weights.items(), key=lambda item: (-item[1], item[0]))
    kept = ranked[: max(1, budget)]
    clauses = [{"term": {text_field: {"value": term, "boost": round(weight, 6)}}} for term, weight in kept]
    info = {"scoring": "bm25q", "terms": len(kept), "dropped_terms": len(ranked) - len(kept)}
    if not clauses:  # no term of the text is in the index (an empty bool would match everything)
        return Built({"match_none": {}}, info)
    return Built({"bool": {"should": clauses}}, info)


def with_boost(query: dict, boost: float | None) -> dict:
    if boost is None or boost == 1:
        return query
    return {"bool": {"should": [query], "boost": boost}}


def fused(original: dict, rewritten: dict, original_boost: float = 1.0, rewrite_boost: float = 1.0) -> dict:
    """Original and rewrite in one ``bool.should``: documents matching either, scores summed with boosts."""
    return {"bool": {"should": [with_boost(original, original_boost), with_boost(rewritten, rewrite_boost)]}}


def leaf_texts(rewrite: Rewrite, mode: str, repeat: int, tokens: int | None = None) -> list[str]:
    """The texts to search for one rewrite: one, or the original and the rewrite for ``both``.

    ``tokens``: the text's token budget. In ``concat`` (and ``adaptive``) the original comes first,
    ``repeat`` times, so capping the joined text would keep the original alone: each part is capped to its
    share instead (half the budget for the copies of the original, the rest for the rewrite)."""
    if mode in ("concat", "adaptive") and tokens is not None:
        if mode == "adaptive":
            repeat = adaptive_copies(rewrite.original, rewrite.text)
        per_copy = max(1, tokens // (2 * repeat))
        original, _ = cap_tokens(rewrite.original, per_copy)
        text, _ = cap_tokens(rewrite.text, max(1, tokens - per_copy * repeat))
        return [" ".join([original] * repeat + [text])]
    combined = rewrite.combined(mode, repeat)
    return list(combined) if isinstance(combined, tuple) else [combined]


def walk_values(node: Any) -> Iterator[Any]:
    """Every value inside a JSON-like structure (for tests and checks)."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk_values(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_values(value)


def count_clauses(query: Any) -> int:
    """Leaf query clauses in a built query (``term``/``match``/``multi_match``)."""
    return sum(1 for value in walk_values(query) if isinstance(value, dict) and len(value) == 1
               and next(iter(value)) in ("term", "match", "multi_match"))

