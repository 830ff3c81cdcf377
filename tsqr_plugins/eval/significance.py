"""Paired significance of a variant's per-query scores against the original queries' (the paired
two-sided t-test IR papers report, scipy's ``ttest_rel``)."""

from __future__ import annotations

import math
from typing import Sequence

from ..lazy import require


def paired_t_test(variant: Sequence[float], baseline: Sequence[float]) -> float:
    """The two-sided p-value that ``variant`` and ``baseline`` (per query, same order) have the same
    mean. When every difference is the same the t statistic is undefined: 1.0 for no difference,
    0.0 for one that never varies."""
    if len(variant) != len(baseline):
        raise ValueError(f"{len(variant)} scores against {len(baseline)}")
    differences = [a - b for a, b in zip(variant, baseline)]
    if len(differences) < 2:
        return 1.0
    if max(differences) == min(differences):
        return 1.0 if differences[0] == 0 else 0.0
    stats = require("scipy.stats", "eval", "the significance test")
    p_value = float(stats.ttest_rel(variant, baseline).pvalue)
    return 1.0 if math.isnan(p_value) else p_value
