"""Ranking measures in plain Python, for what needs one without a run file (the training reward).

``tsqr eval`` computes its tables with ir-measures (trec_eval's definitions, and its ordering of
tied scores); ``ndcg_at_k`` is trec_eval's ``ndcg_cut`` for a ranking without ties, and a test holds
the two equal on generated rankings and graded judgements.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def ndcg_at_k(ranked_ids: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with graded judgements, as trec_eval's ``ndcg_cut``: gain = the judgement (linear),
    discount log2(rank + 1), the ideal from the judgements sorted; 0 when nothing is relevant."""
    dcg = sum(max(relevance.get(doc, 0), 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked_ids[:k]))
    best = sorted((grade for grade in relevance.values() if grade > 0), reverse=True)[:k]
    ideal = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(best))
    return dcg / ideal if ideal else 0.0
