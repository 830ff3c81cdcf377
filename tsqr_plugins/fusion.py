"""Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): several rankings of one
query become one, each document scoring ``sum_i w_i / (k + rank_i(d))`` over the rankings that hold
it (ranks from 1). Used to fuse the original query's results with the rewrite's."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Hashable, Mapping, Sequence

from tsqr_plugins.errors import InputError

RRF_K = 60  # the paper's constant, and Elasticsearch's, OpenSearch's and LlamaIndex's default


def check_constant(name: str, value: Any) -> Any:
    """``value`` as given when it is a finite number >= 0 (a rank constant, a weight), else an
    InputError naming ``name``: NaN or infinity would score every fused document NaN or Infinity."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < math.inf:
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_rrf_k(k: Any) -> Any:
    """``k`` as given when it is a valid rank constant (:func:`check_constant`), else InputError."""
    return check_constant("rrf_k", k)


def ranked(run: Mapping[str, float]) -> list[str]:
    """Document ids best first; equal scores ordered as trec_eval orders them (by id, descending),
    so that a fused ranking agrees with the scores tsqr eval reports for its inputs."""
    return [doc_id for doc_id, _ in sorted(run.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def rrf(runs: Sequence[Mapping[str, float]], k: float = RRF_K, weights: Sequence[float] | None = None,
        depth: int | None = None) -> dict[str, float]:
    """The fused scores of one query's ``runs`` (each ``{doc_id: score}``).

    Args:
        runs: the rankings to fuse, as scores (higher is better).
        k: the rank constant; larger values flatten the difference between top ranks.
        weights: one per run (default 1 each).
        depth: only each run's first ``depth`` documents take part (default: all).

    Returns:
        ``{doc_id: fused score}`` for every document in the runs' first ``depth``.
    """
    return rrf_ranked([ranked(run) for run in runs], k, weights, depth)


def rrf_ranked(rankings: Sequence[Sequence[Hashable]], k: float = RRF_K, weights: Sequence[float] | None = None,
               depth: int | None = None) -> dict[Hashable, float]:
    """:func:`rrf` over rankings given as ids in order, best first (a host's own result lists).

    Args:
        rankings: each ranking's ids, best first; an id appears once per ranking.
        k: the rank constant.
        weights: one per ranking (default 1 each).
        depth: only each ranking's first ``depth`` ids take part (default: all).

    Returns:
        ``{id: fused score}``, ids in the order first seen.
    """
    if k < 0:
        raise InputError(f"the RRF constant k must be >= 0, got {k}")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise InputError(f"{len(weights)} RRF weights for {len(rankings)} rankings")
    fused: dict[Hashable, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, doc_id in enumerate(ranking[:depth], 1):
            fused[doc_id] = fused.get(doc_id, 0.0) + weight / (k + rank)
    return fused


def best_first(fused: Mapping[Hashable, float]) -> list[Hashable]:
    """The fused ids by score, equal scores in the order first seen (a stable sort)."""
    return sorted(fused, key=lambda doc_id: -fused[doc_id])
