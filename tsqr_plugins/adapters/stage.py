"""The query-transform stage shared by the Elasticsearch/OpenSearch clients and the ``_search`` proxy.

A search is rewritten in three steps, so that sync clients, async clients and the proxy share
everything but the I/O: ``plan`` (find the text queries; their texts go to the rewriter in one
batch), ``stats_needed`` (the ``_termvectors`` lookups BM25Q scoring needs), ``apply`` (build the
new query from the rewrites and the statistics). Fail-open: a fallen-back rewrite leaves its text
query exactly as the caller wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..combine import DEFAULT_REPEAT, MODES
from ..core import Rewrite, check_samples
from ..errors import InputError
from ..anytime import check_budget
from ..fusion import RRF_K, check_constant
from .. import querydsl
from ..querydsl import Built, TextQuery

StatsKey = tuple[str, tuple[str, ...]]  # (text, field names)
FUSIONS = (None, "rrf")


@dataclass(frozen=True)
class StageSettings:
    """How the client stages and ``tsqr proxy`` rewrite the text queries of a search.

    Args:
        fields: Rewrite only text queries on these fields (one name or several); None: every
            ``match``/``multi_match``/``combined_fields``.
        scoring: ``"match"``: plain BM25 on the rewrite; ``"bm25q"``: BRIGHT's query-side BM25,
            term clauses weighted from one ``_termvectors`` call (falls back to ``match`` when it
            cannot, saying why).
        mode: ``"replace"``, ``"concat"`` or ``"both"`` (original and rewrite in one ``bool.should``).
        repeat: ``concat`` only: how many times the original goes before the rewrite.
        clause_budget: Most clauses one search's rewrites may add, 1 to 65,536 (default 1,000,
            below the engines' 1,024); the lowest-weight terms or the last tokens are dropped.
        original_boost: ``both`` only: boost of the original query's clause.
        rewrite_boost: ``both`` only: boost of the rewrite's clause.
        k1: ``bm25q``: BM25's k1 for the query-side weights (0.9, as BRIGHT).
        b: ``bm25q``: BM25's b for the query-side weights (0.4, as BRIGHT).
        include_filters: Also rewrite text queries under ``bool.filter``/``must_not``,
            ``boosting.negative`` and ``constant_score`` (left alone by default: they exclude
            documents rather than rank them).
        fusion: ``"rrf"``: a client stage's ``search()`` (or a ``_search`` through ``tsqr proxy``)
            searches the original body and the rewritten one (built by ``mode``) and answers their
            reciprocal rank fusion; None: the rewritten search alone.
        rrf_k: ``rrf``: the rank constant (60, as the engines).
        original_weight: ``rrf``: the weight of the original query's ranking.
        rewrite_weight: ``rrf``: the weight of the rewrite's ranking.
        budget: Anytime rewriting, with ``fusion="rrf"``: seconds the rewrite may take; the
            original is searched at once, and its answer is the answer when the rewrite is later.
            None: no budget (the rewriter's own ``timeout`` applies). With several samples the
            budget waits for all of them (one engine call makes them).
        samples: Rewrites of each text query (``Rewriter.rewrite_samples``: one engine call where
            the engine samples several, each cached under its sample index). Without fusion a
            text query is rewritten with its samples joined (``core.join_samples``), so every
            ``mode`` works as with one; with ``rrf`` each sample is its own search (a sample that
            fell back for every text query is not searched), fused with the original's with the
            weights ``[original_weight] + [rewrite_weight] * n``. Default 1.

    Raises:
        InputError: An unknown ``scoring``, ``mode`` or ``fusion``, ``clause_budget`` out of range,
            an ``rrf_k`` or weight that is not a finite number >= 0, a ``budget`` that is not positive or has no fusion, or
            ``samples`` below 1.
    """

    fields: tuple[str, ...] | None = None
    scoring: str = "match"
    mode: str = "replace"
    repeat: int = DEFAULT_REPEAT
    clause_budget: int = querydsl.DEFAULT_CLAUSE_BUDGET
    original_boost: float = 1.0
    rewrite_boost: float = 1.0
    k1: float = querydsl.BM25_K1
    b: float = querydsl.BM25_B
    include_filters: bool = False  # also rewrite text queries under filter/must_not/negative
    fusion: str | None = None
    rrf_k: float = RRF_K
    original_weight: float = 1.0
    rewrite_weight: float = 1.0
    budget: float | None = None
    samples: int = 1

    def __post_init__(self):
        check_samples(self.samples)
        if self.scoring not in querydsl.SCORINGS:
            raise InputError(f"scoring must be one of {', '.join(querydsl.SCORINGS)}, got {self.scoring!r}")
        if self.mode not in MODES:
            raise InputError(f"unknown combine mode {self.mode!r}; choose one of {list(MODES)}")
        if not 1 <= self.clause_budget <= querydsl.MAX_CLAUSE_COUNT * 64:
            raise InputError(f"clause_budget must be between 1 and {querydsl.MAX_CLAUSE_COUNT * 64}")
        if self.fusion not in FUSIONS:
            raise InputError(f"fusion must be one of {list(FUSIONS)}, got {self.fusion!r}")
        for name in ("rrf_k", "original_weight", "rewrite_weight"):
            check_constant(name, getattr(self, name))
        check_budget(self.budget, fusing=True)  # a finite positive number, as every host's budget
        if self.budget is not None and self.fusion is None:
            raise InputError("budget (anytime rewriting) fuses the original's hits with the rewrite's: "
                             "set fusion='rrf' with it")
        if self.fields is not None:  # one name or any sequence of names, kept as a tuple
            names = (self.fields,) if isinstance(self.fields, str) else tuple(self.fields)
            object.__setattr__(self, "fields", names)


@dataclass
class Plan:
    """The caller's ``query`` and ``retriever`` copied, their text queries to rewrite, and the
    text queries left as written (with the reason, for the metadata)."""

    holder: dict
    leaves: list[TextQuery]
    rewrites: list[Rewrite] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [leaf.text for leaf in self.leaves]


def plan(search: dict, settings: StageSettings) -> Plan:
    """``search``: the parts of a search body that hold queries (``query``, ``retriever``)."""
    holder, found = querydsl.copy_with_text_queries(search, settings.fields, settings.include_filters)
    # Empty text queries are the caller's own business: leave them to the engine.
    leaves = [leaf for leaf in found.leaves if isinstance(leaf.text, str) and leaf.text.strip()]
    return Plan(holder, leaves, skipped=found.skipped)


def _per_leaf(plan: Plan, settings: StageSettings) -> int:
    """Each rewritten text query's share of the clause budget."""
    return settings.clause_budget // max(1, sum(not rewrite.fallback for rewrite in plan.rewrites))


def _texts(rewrite: Rewrite, leaf: TextQuery, settings: StageSettings, per_leaf: int) -> list[str]:
    tokens = max(1, per_leaf // querydsl.queried_fields(list(leaf.fields))[0])
    return querydsl.leaf_texts(rewrite, settings.mode, settings.repeat, tokens)


def stats_needed(plan: Plan, settings: StageSettings) -> list[StatsKey]:
    """The (text, fields) pairs whose ``_termvectors`` BM25Q needs, each once."""
    if settings.scoring != "bm25q":
        return []
    per_leaf = _per_leaf(plan, settings)
    keys: dict[StatsKey, None] = {}
    for leaf, rewrite in zip(plan.leaves, plan.rewrites):
        if not rewrite.fallback and leaf.kind != "text" and querydsl.concrete_fields(leaf.field_names):
            for text in _texts(rewrite, leaf, settings, per_leaf):
                keys[(querydsl.clean_text(text), leaf.field_names)] = None
    return list(keys)


def apply(plan: Plan, settings: StageSettings, stats: dict[StatsKey, dict | None] | None = None) -> tuple[dict, dict]:
    """The rewritten search parts (``query``, ``retriever``) and the metadata saying what was done
    (per text query, and what was left as written)."""
    stats = stats or {}
    per_leaf = _per_leaf(plan, settings)
    entries = []
    for leaf, rewrite in zip(plan.leaves, plan.rewrites):
        entry: dict[str, Any] = {"original": rewrite.original, "fallback": rewrite.fallback}
        if rewrite.fallback:
            entry["reason"] = rewrite.reason
        else:
            texts = _texts(rewrite, leaf, settings, per_leaf)
            if leaf.kind == "text" and len(texts) > 1:  # a retriever's query is one text: both, side by side
                texts = [" ".join(texts)]
            built = [_build(text, leaf, max(1, per_leaf // len(texts)), settings, stats) for text in texts]
            query = built[0].query if len(built) == 1 else querydsl.fused(
                built[0].query, built[1].query, settings.original_boost, settings.rewrite_boost)
            leaf.container[leaf.key] = query if leaf.kind == "text" else querydsl.with_boost(query, leaf.boost)
            entry.update(rewrite=rewrite.text, **_merged_info(built))
        entries.append(entry)
    info = {
        "rewritten": sum(not e["fallback"] for e in entries),
        "fallback": sum(e["fallback"] for e in entries),
        "queries": entries,
    }
    if plan.skipped:
        info["not_rewritten"] = plan.skipped
    return plan.holder, info


def _merged_info(built: list[Built]) -> dict:
    merged: dict[str, Any] = {}
    for item in built:
        for key, value in item.info.items():
            counted = isinstance(value, int) and not isinstance(value, bool)
            merged[key] = merged.get(key, 0) + value if counted else value
    return merged


def _build(text: str, leaf: TextQuery, budget: int, settings: StageSettings,
           stats: dict[StatsKey, dict | None]) -> Built:
    names = leaf.field_names
    text = querydsl.clean_text(text)
    malformed = None
    if settings.scoring == "bm25q":
        termvectors = stats.get((text, names))
        if termvectors is not None:
            try:
                return _bm25q(termvectors, names, budget, settings)
            except querydsl.MalformedTermVectors as error:
                malformed = f"malformed _termvectors answer ({error})"
    built = querydsl.match_query(text, list(leaf.fields), budget, leaf.options, leaf.kind)
    if settings.scoring == "bm25q":  # BM25Q needs one index's statistics for named fields
        built.info["stats_unavailable"] = malformed or (
            "a retriever's query text (no query DSL to weight)" if leaf.kind == "text"
            else "no field names (the index's default fields)" if not names
            else "wildcard field names" if not querydsl.concrete_fields(names)
            else "no single index to ask (several indices, a pattern or an alias), or _termvectors failed")
    return built


def _bm25q(termvectors: dict, names: Iterable[str], budget: int, settings: StageSettings) -> Built:
    names = list(names)
    per_field = max(1, budget // len(names))
    built = [querydsl.bm25q_query(querydsl.bm25q_weights(termvectors, name, settings.k1, settings.b), name, per_field)
             for name in names]
    if len(built) == 1:
        return built[0]
    # Several fields: the best field's score, as multi_match's default best_fields does.
    return Built({"dis_max": {"queries": [b.query for b in built]}}, _merged_info(built))
