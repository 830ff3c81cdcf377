"""`tsqr eval`'s work: rewrite each task's queries once, search every retriever with the original and
the rewritten queries, score, and write results.json, TREC runs, report.md and a plot."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .. import __version__
from ..core import Rewriter, join_samples
from ..errors import InputError
from ..fusion import RRF_K, rrf
from ..search import check_retriever_options, make_retriever
from .datasets import Task
from .metrics import PRIMARY, evaluate

ORIGINAL, REWRITTEN = "original", "rewritten"
COMBINATIONS = ("replace", "concat", "adaptive", "rrf")  # rrf: the original's and the rewrite's results, fused
log = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    retrievers: Sequence[str]  # make_retriever specs: embedded, pyserini:bm25, elasticsearch:<url> ...
    output: Path
    k: int = 1000
    mode: str = "replace"  # the paper scores the rewrite alone
    repeat: int = 5
    # several ways to use the rewrites, scored side by side (one variant each, named by the mode);
    # empty: the one variant "rewritten", in ``mode``
    combine: Sequence[str] = ()
    rrf_k: float = RRF_K
    # rewrites per query: their texts joined for replace/concat/adaptive, their lists fused for rrf
    samples: int = 1
    batch_size: int = 32
    search_chunk: int = 64
    cache_dir: Path | None = None
    progress: bool = True
    rewriter_label: str = "none"
    dataset_label: str = ""
    extra: dict = field(default_factory=dict)
    retriever_options: dict = field(default_factory=dict)  # e.g. index_type; one no retriever takes is refused


def run_eval(tasks: Sequence[Task], settings: EvalSettings, rewriter: Rewriter | None = None,
             gain_encoder: Callable | None = None) -> dict:
    if settings.k < 10:
        raise InputError(f"--k must be at least 10 (nDCG@10 needs ten results), got {settings.k}")
    check_retriever_options(settings.retrievers, settings.retriever_options)
    check_combinations(settings.combine)
    textless = next((task for task in tasks if not task.has_texts), None)
    needs_texts = [r for r in settings.retrievers if r.partition(":")[0] != "pyserini"]
    if textless is not None and (needs_texts or gain_encoder is not None):
        raise InputError(f"task {textless.name} comes from {textless.source}'s resources, which hold no document texts; "
                         f"{', '.join(needs_texts) or 'the rewrite gain'} needs them: load BRIGHT itself (--bright-dir)")
    output = Path(settings.output)
    (output / "runs").mkdir(parents=True, exist_ok=True)
    results: dict = {spec: {} for spec in settings.retrievers}
    task_info, gains = {}, {}
    for task in tasks:
        rows = _rewrite(task, rewriter, settings) if rewriter else None
        rewrites = [join_samples(row) for row in rows] if rows else None
        fallbacks = sum(r.fallback for r in rewrites) if rewrites else 0
        task_info[task.name] = {"queries": len(task.query_ids), "documents": len(task.doc_ids),
                                "rewrite_fallbacks": fallbacks, "source": task.source}
        trec_ok = _write_qrels(output / "runs" / f"qrels.{task.name}.txt", task.qrels)
        variants = _variants(task, rows, rewrites, settings)
        for spec in settings.retrievers:
            retriever = make_retriever(spec, settings.cache_dir, settings.progress, **settings.retriever_options)
            retriever.index(task.doc_ids, task.documents, task=task.name, prebuilt=task.prebuilt_index)
            runs: dict[str, dict] = {}
            for variant, texts in variants.items():
                if isinstance(texts, tuple):  # fused from runs searched already
                    runs[variant] = _fused([runs[name] for name in texts], settings)
                else:
                    runs[variant] = _search(retriever, task, texts, settings, f"{spec} {variant} {task.name}")
                if variant.startswith("_"):  # searched only to be fused
                    continue
                means, per_query = evaluate(task.qrels, runs[variant])
                results[spec].setdefault(variant, {})[task.name] = {"metrics": means, "per_query": per_query}
                if trec_ok:
                    _write_trec(output / "runs" / f"{_safe(spec)}.{variant}.{task.name}.trec", runs[variant],
                                f"tsqr-{_safe(spec)}-{variant}")
        if rewrites and gain_encoder is not None:
            gains[task.name] = _gains(task, rewrites, gain_encoder, results, settings.retrievers,
                                      settings.combine[0] if settings.combine else REWRITTEN)
    document = {
        "tsqr_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dataset": settings.dataset_label,
        "rewriter": settings.rewriter_label,
        "mode": settings.mode,
        **({"combine": list(settings.combine), "rrf_k": settings.rrf_k} if settings.combine else {}),
        **({"samples": settings.samples} if settings.samples > 1 else {}),
        "k": settings.k,
        "primary_metric": PRIMARY,
        "empty_results_count_as": 0,
        **settings.extra,
        "tasks": task_info,
        "results": results,
    }
    if gains:
        document["rewrite_gain"] = gains
    if rewriter is not None:
        document["significance"] = _significance(results)
    (output / "results.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    from .report import write_report

    write_report(document, output)
    return document


def check_combinations(combine: Sequence[str]) -> None:
    unknown = [mode for mode in combine if mode not in COMBINATIONS]
    if unknown:
        raise InputError(f"unknown --combine mode(s) {unknown}; choose from {list(COMBINATIONS)}")
    if len(set(combine)) != len(combine):
        raise InputError(f"--combine names a mode twice: {list(combine)}")


def _variants(task: Task, rows, joined, settings: EvalSettings) -> dict[str, list[str] | tuple[str, ...]]:
    """The query texts of each variant, or the names of the runs it fuses, in search order; a name
    starting with "_" is searched only to be fused (a None text: that query is not searched). ``rows``: each query's rewrites (one per
    sample); ``joined``: each row as one rewrite (:func:`~tsqr_plugins.core.join_samples`), for every mode but rrf, which
    fuses the samples' lists."""
    variants: dict[str, list[str] | tuple[str, ...]] = {ORIGINAL: list(task.queries)}
    if not rows:
        return variants
    if not settings.combine:
        variants[REWRITTEN] = [r.combined_text(settings.mode, settings.repeat) for r in joined]
        return variants
    samples = len(rows[0])
    if "replace" in settings.combine or ("rrf" in settings.combine and samples == 1):
        variants["replace"] = [r.combined_text("replace") for r in joined]
    for mode in ("concat", "adaptive"):
        if mode in settings.combine:
            variants[mode] = [r.combined_text(mode, settings.repeat) for r in joined]
    if "rrf" in settings.combine:
        if samples == 1:
            variants["rrf"] = (ORIGINAL, "replace")
        else:  # the original's list and each sample's that did not fall back (core.fused_samples)
            for i in range(samples):
                variants[f"_sample{i}"] = [None if row[i].fallback else row[i].text for row in rows]
            variants["rrf"] = (ORIGINAL, *(f"_sample{i}" for i in range(samples)))
    return variants


def _fused(runs: list[dict], settings: EvalSettings) -> dict[str, dict[str, float]]:
    """Each query's runs fused by RRF, the first ``k`` kept; a run without the query (a sample
    that fell back was not searched) takes no part. With one sample a fallback's rewrite is the
    original, so its list agrees with the original's and the fusion keeps that ranking."""
    fused = {}
    for qid in set().union(*(run.keys() for run in runs)):
        scores = rrf([run.get(qid, {}) for run in runs], settings.rrf_k, depth=settings.k)
        fused[qid] = dict(sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)[:settings.k])
    return fused


def rewritten_variants(document: dict) -> list[str]:
    """The variants that use the rewrites, in the order they were asked for."""
    return list(document.get("combine") or [REWRITTEN])


def _significance(results: dict) -> dict:
    """Per retriever and variant: the mean change of the primary measure against the original
    queries over every judged query of every task, and its paired t-test p-value."""
    from .significance import paired_t_test

    table: dict = {}
    for spec, variants in results.items():
        if ORIGINAL not in variants:
            continue
        keys = [(task, qid) for task, scores in variants[ORIGINAL].items() for qid in scores["per_query"]]
        baseline = [variants[ORIGINAL][task]["per_query"][qid][PRIMARY] for task, qid in keys]
        for variant, per_task in variants.items():
            if variant == ORIGINAL:
                continue
            values = [per_task[task]["per_query"][qid][PRIMARY] for task, qid in keys]
            table.setdefault(spec, {})[variant] = {
                "queries": len(keys), "mean_change": (sum(values) - sum(baseline)) / max(len(keys), 1),
                "p_value": paired_t_test(values, baseline), "test": "paired t-test, two-sided"}
    return table


def _rewrite(task: Task, rewriter: Rewriter, settings: EvalSettings):
    from tqdm.auto import tqdm

    rewrites = []
    with tqdm(total=len(task.queries), desc=f"rewriting {task.name}", unit="query",
              disable=not settings.progress, file=sys.stderr, leave=False) as bar:
        for start in range(0, len(task.queries), settings.batch_size):
            chunk = task.queries[start:start + settings.batch_size]
            rewrites.extend(rewriter.rewrite_samples(chunk, settings.samples))  # one sample: rewrite_batch's
            bar.update(len(chunk))
    return rewrites


def _search(retriever, task: Task, texts: list[str | None], settings: EvalSettings, label: str):
    """The run of ``texts`` (one per query; None: that query is not searched)."""
    from tqdm.auto import tqdm

    run: dict[str, dict[str, float]] = {}
    with tqdm(total=len(texts), desc=f"searching {label}", unit="query", disable=not settings.progress,
              file=sys.stderr, leave=False) as bar:
        for start in range(0, len(texts), settings.search_chunk):
            chunk = [(qid, text) for qid, text in zip(task.query_ids[start:start + settings.search_chunk],
                                                      texts[start:start + settings.search_chunk]) if text is not None]
            if chunk:
                excluded = [task.excluded.get(qid, ()) for qid, _ in chunk]
                hits = retriever.search_batch([text for _, text in chunk], settings.k, excluded)
                for (qid, _), ranked in zip(chunk, hits):
                    run[qid] = ranked.as_dict() if hasattr(ranked, "as_dict") else {h.doc_id: h.score for h in ranked}
            bar.update(len(texts[start:start + settings.search_chunk]))
    return run


def _gains(task: Task, rewrites, encoder, results, retrievers, variant: str) -> dict:
    from ..gain import embedding_gain

    known = task.doc_positions
    judged, positives = [], []
    for i, qid in enumerate(task.query_ids):
        docs = [task.doc_text(d) for d, rel in task.qrels.get(qid, {}).items() if rel > 0 and d in known]
        if docs:
            judged.append(i)
            positives.append(docs)
    # A fallback rewrite is the original query: its gain is 0, as it should be.
    values = embedding_gain([task.queries[i] for i in judged], [rewrites[i].text for i in judged],
                            positives, encoder)
    per_query = {}
    for i, gain in zip(judged, values):
        qid = task.query_ids[i]
        entry = {"gain": gain}
        for spec in retrievers:
            before = results[spec][ORIGINAL][task.name]["per_query"][qid][PRIMARY]
            after = results[spec][variant][task.name]["per_query"][qid][PRIMARY]
            entry[f"{PRIMARY} change ({spec})"] = after - before
        per_query[qid] = entry
    mean = sum(values) / len(values) if values else 0.0
    return {"mean": mean, "per_query": per_query}


def _write_qrels(path: Path, qrels: dict[str, dict[str, int]]) -> bool:
    """The task's judgements as TREC qrels (``qid 0 docid relevance``), beside its runs, so that
    trec_eval (or ``python -m pyserini.eval.trec_eval -c -m ndcg_cut.10 qrels run``) recomputes the
    table's numbers. False, with a warning, when an id holds whitespace (the format cannot)."""
    ids = [qid for qid in qrels] + [doc_id for docs in qrels.values() for doc_id in docs]
    spaced = next((i for i in ids if not _trec_id(i)), None)
    if spaced is not None:
        log.warning("no TREC files for %s: the id %r holds whitespace, which the TREC format cannot", path.name,
                    spaced)
        return False
    with open(path, "w", encoding="utf-8") as handle:
        for qid, docs in qrels.items():
            for doc_id, relevance in docs.items():
                handle.write(f"{qid} 0 {doc_id} {relevance}\n")
    return True


def _trec_id(value: str) -> bool:
    """TREC files are whitespace-separated: an id must be non-empty and hold no whitespace."""
    return bool(value) and not any(ch.isspace() for ch in value)


def _write_trec(path: Path, run: dict[str, dict[str, float]], tag: str) -> None:
    """A TREC run. Document ids with whitespace (the format cannot hold them) are left out."""
    with open(path, "w", encoding="utf-8") as handle:
        for qid, docs in run.items():
            ranked = [(doc_id, score) for doc_id, score in docs.items() if _trec_id(doc_id)]
            for rank, (doc_id, score) in enumerate(ranked, 1):
                # every digit of the score: rounding would make ties that trec_eval breaks by document id
                handle.write(f"{qid} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
