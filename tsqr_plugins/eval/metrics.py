"""Retrieval metrics through ir-measures (trec_eval's definitions via pytrec-eval-terrier).

Every judged query counts: a query with no results in the run scores 0 on every measure (trec_eval
and pytrec_eval would drop it from the mean instead, which flatters a run that fails queries).
BRIGHT's own runs always hold every query, so on BRIGHT both conventions give the same numbers.
Equal scores are ordered as trec_eval orders them (by document id, descending), whatever the run's
order: that is how BRIGHT's published numbers were computed.
"""

from __future__ import annotations

from ..lazy import require

PRIMARY = "nDCG@10"
MEASURES = ("nDCG@10", "R@10", "R@100", "AP@100", "RR")
# Names in results.json and reports.
LABELS = {"nDCG@10": "nDCG@10", "R@10": "Recall@10", "R@100": "Recall@100", "AP@100": "MAP@100",
          "RR": "MRR@10"}


def evaluate(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]):
    """Per-query values and their means: ``({label: mean}, {query_id: {label: value}})``."""
    ir_measures = require("ir_measures", "eval", "computing retrieval metrics")
    measures = [ir_measures.parse_measure(name) for name in MEASURES]
    per_query: dict[str, dict[str, float]] = {qid: {LABELS[m]: 0.0 for m in MEASURES} for qid in qrels}
    judged_run = {qid: docs for qid, docs in run.items() if qid in qrels and docs}
    if judged_run:
        # One provider for every measure, so that all of them order ties the same way.
        for metric in ir_measures.pytrec_eval.iter_calc(measures, qrels, judged_run):
            value = float(metric.value)
            if str(metric.measure) == "RR" and value < 0.1:
                value = 0.0  # first relevant document below rank 10: RR@10 is 0
            per_query[metric.query_id][LABELS[str(metric.measure)]] = value
    means = {}
    for name in MEASURES:
        label = LABELS[name]
        means[label] = sum(values[label] for values in per_query.values()) / max(len(per_query), 1)
    return means, per_query
