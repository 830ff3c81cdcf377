"""Several sampled rewrites of each text query (``samples=n``, issue 23) in the client stages and
``tsqr proxy``: what a search's metadata says of them. Pure.

Without fusion a text query is rewritten with its samples joined (``core.join_samples``: replace,
concat and both work as with one rewrite); with ``fusion="rrf"`` each sample is its own search,
every text query rewritten with that sample, fused with the original's. A sample that fell back for
every text query of a search is not searched (its search would be the original's again).

The metadata (``tsqr``) of a search with several samples has ``samples``: ``count`` (n) and
``fallback`` (the samples that fell back for every text query), and each text query's entry has
``samples``: per sample its ``text`` (its query on a fallback), ``fallback`` (and ``reason``) and
``cached``; a fused search's entries add what that sample's search made of the text query
(``dropped_terms``, ``scoring``...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core import Rewrite, sample_fields

BUILT_ONLY = ("original", "fallback", "reason", "rewrite")  # what a sample's own entry says already


def column(rows: Sequence[Sequence[Rewrite]], sample: int) -> list[Rewrite]:
    """Sample ``sample`` of each text query's row (``Rewriter.rewrite_samples``' rows)."""
    return [row[sample] for row in rows]


def searched(infos: Sequence[dict]) -> list[int]:
    """The samples whose search holds a rewrite (its metadata's ``rewritten`` > 0): those to search."""
    return [number for number, info in enumerate(infos) if info.get("rewritten")]


def sample_entry(sample: Rewrite, built: dict | None = None) -> dict[str, Any]:
    """One sample of a text query in the metadata: its text, whether it fell back (and why),
    whether it came from the cache; ``built``: that sample's own search's entry (fusion), whose
    query-building fields are added."""
    entry = sample_fields(sample)
    if built:
        entry.update({key: value for key, value in built.items() if key not in BUILT_ONLY})
    return entry


def summary(rows: Sequence[Sequence[Rewrite]], count: int) -> dict[str, Any]:
    """The search's ``samples``: how many, and which fell back for every text query."""
    return {"count": count,
            "fallback": [number for number in range(count) if rows and all(row[number].fallback for row in rows)]}


def all_fell_back(info: dict, count: int) -> dict:
    """The metadata of a search left as written (the rewriter failed or was late, or the engine
    refused the rewritten search): with several samples, ``samples`` says that every one fell back."""
    if count == 1:
        return info
    return {**info, "samples": {"count": count, "fallback": list(range(count))}}


def described(info: dict, rows: Sequence[Sequence[Rewrite]], count: int) -> dict:
    """The metadata of a search rewritten with its samples joined (``info``, from ``stage.apply``),
    each text query's samples added; ``info`` itself when ``count`` is 1 or there is no text query.

    Args:
        info: The search's metadata (``queries`` in the order of ``rows``).
        rows: Each text query's samples.
        count: Samples per text query.
    """
    if count == 1 or not rows or "queries" not in info:
        return info
    queries = [{**entry, "samples": [sample_entry(sample) for sample in row]}
               for entry, row in zip(info["queries"], rows)]
    return {**info, "queries": queries, "samples": summary(rows, count)}


def merged(infos: Sequence[dict], rows: Sequence[Sequence[Rewrite]]) -> dict:
    """The metadata of a search fused from its samples' searches: each text query's entry (a
    fallback only when every sample fell back, as ``core.join_samples``) with its samples, each
    with what its own search made of it.

    Args:
        infos: Each sample's search's metadata (``stage.apply``'s), in sample order.
        rows: Each text query's samples.
    """
    entries = []
    for number, row in enumerate(rows):
        fallback = all(sample.fallback for sample in row)
        entry: dict[str, Any] = {"original": row[0].original, "fallback": fallback}
        if fallback:
            entry["reason"] = row[0].reason
        entry["samples"] = [sample_entry(sample, info["queries"][number]) for sample, info in zip(row, infos)]
        entries.append(entry)
    info = {"rewritten": sum(not e["fallback"] for e in entries), "fallback": sum(e["fallback"] for e in entries),
            "queries": entries}
    if "not_rewritten" in infos[0]:
        info["not_rewritten"] = infos[0]["not_rewritten"]
    info["samples"] = summary(rows, len(infos))
    return info
