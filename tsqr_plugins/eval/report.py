"""report.md (the paper's layout: tasks as columns, average last) and a PNG plot of results.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from .datasets import BRIGHT_TASKS, SHORT_NAMES
from ..textfile import read_text
from .metrics import PRIMARY

log = logging.getLogger(__name__)


def task_order(names) -> list[str]:
    return sorted(names, key=lambda n: (BRIGHT_TASKS.index(n) if n in BRIGHT_TASKS else len(BRIGHT_TASKS), n))


def table_rows(document: dict, label: str = "") -> tuple[list[str], list[list[str]]]:
    """Tasks, then one row per (retriever, variant): nDCG@10 x 100 per task and the average."""
    tasks = task_order(document["tasks"])
    rows = []
    for retriever, variants in document["results"].items():
        for variant, per_task in variants.items():
            values = [per_task[t]["metrics"][PRIMARY] * 100 for t in tasks if t in per_task]
            cells = [f"{per_task[t]['metrics'][PRIMARY] * 100:.1f}" if t in per_task else "" for t in tasks]
            average = f"{sum(values) / len(values):.1f}" if values else ""
            queries = ("original" if variant == "original" else document["rewriter"] if variant == "rewritten"
                       else f"{document['rewriter']} ({variant})")
            rows.append([*(([label]) if label else []), retriever, queries, *cells, average])
    return tasks, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# The shipped sample shows the pipeline; its numbers are no evidence (its texts are ours).
SAMPLE_NOTE = ("The sample's queries, documents and rewrites were written by the tsqr authors to show the "
               "pipeline end to end: the jump from original to rewritten queries is by construction, not a "
               "measurement of TongSearch-QR (docs/reproduce.md has the real BRIGHT commands).")


def _how_combined(document: dict) -> str:
    if document.get("combine"):
        return f"combined as {', '.join(document['combine'])}; rrf with k = {document['rrf_k']:g}"
    return f"mode `{document['mode']}`"


def write_report(document: dict, output: Path) -> None:
    tasks, rows = table_rows(document)
    header = ["retriever", "queries", *[SHORT_NAMES.get(t, t) for t in tasks], "Avg"]
    parts = [
        f"# tsqr eval: {document['dataset']}",
        "",
        f"{PRIMARY} x 100 per task. Rewriter: `{document['rewriter']}` ({_how_combined(document)}), "
        f"depth {document['k']}. Queries with no results count as 0.",
        *(["", SAMPLE_NOTE] if document["dataset"] == "sample" else []),
        "",
        markdown_table(header, rows),
        "",
        "| task | queries | documents | rewrite fallbacks | source |",
        "|---|---|---|---|---|",
        *[f"| {t} | {i['queries']} | {i['documents']} | {i['rewrite_fallbacks']} | {i.get('source', '')} |"
          for t, i in ((t, document["tasks"][t]) for t in tasks)],
    ]
    significance = document.get("significance")
    if significance:
        parts += ["", "## Against the original queries", "",
                  f"Mean change of {PRIMARY} x 100 over every judged query, and the two-sided paired t-test's "
                  "p-value (scipy's ttest_rel) that the variant and the original queries score the same.",
                  "", "| retriever | variant | change | p-value | queries |", "|---|---|---|---|---|"]
        parts += [f"| {spec} | {variant} | {entry['mean_change'] * 100:+.1f} | {entry['p_value']:.3g} | {entry['queries']} |"
                  for spec, variants in significance.items() for variant, entry in variants.items()]
    gains = document.get("rewrite_gain")
    if gains:
        parts += ["", f"## Rewrite gain ({document.get('gain_model', 'embedding model')})", "",
                  "10 x mean over gold documents of cos(rewrite, doc) - cos(query, doc): the training reward.",
                  "", "| task | mean gain |", "|---|---|"]
        parts += [f"| {t} | {gains[t]['mean']:.3f} |" for t in tasks if t in gains]
    (output / "report.md").write_text("\n".join(parts) + "\n", encoding="utf-8")
    plot(document, output / "plot.png")


def plot(document: dict, path: Path) -> bool:
    """Bars per task, original vs rewritten, one panel per retriever. False when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plot (install the eval extra: pip install -e '.[eval]' in the tsqr clone)")
        return False
    tasks = task_order(document["tasks"])
    retrievers = list(document["results"])
    figure, axes = plt.subplots(len(retrievers), 1, figsize=(max(6, 1.1 * len(tasks) + 2), 3.2 * len(retrievers)),
                                squeeze=False)
    for axis, retriever in zip(axes[:, 0], retrievers):
        variants = document["results"][retriever]
        width = 0.8 / max(len(variants), 1)
        for n, (variant, per_task) in enumerate(variants.items()):
            values = [per_task.get(t, {}).get("metrics", {}).get(PRIMARY, 0) * 100 for t in tasks]
            axis.bar([i + n * width for i in range(len(tasks))], values, width, label=variant)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))])
        axis.set_xticklabels([SHORT_NAMES.get(t, t) for t in tasks])
        axis.set_ylabel(f"{PRIMARY} x 100")
        axis.set_title(retriever)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def compare(folders: Sequence[Path]) -> str:
    """One table for several result folders (rows labelled by folder name)."""
    documents = []
    for folder in folders:
        path = Path(folder) / "results.json"
        try:
            documents.append((Path(folder).name, json.loads(read_text(path))))
        except (OSError, json.JSONDecodeError) as error:
            from ..errors import InputError

            raise InputError(f"cannot read {path}: {error}") from error
    tasks = task_order({t for _, d in documents for t in d["tasks"]})
    rows = []
    for label, document in documents:
        document = {**document, "tasks": {t: document["tasks"].get(t, {}) for t in tasks}}
        results = {b: {v: {t: per_task[t] for t in tasks if t in per_task} for v, per_task in vs.items()}
                   for b, vs in document["results"].items()}
        _, more = table_rows({**document, "results": results}, label)
        rows += more
    header = ["run", "retriever", "queries", *[SHORT_NAMES.get(t, t) for t in tasks], "Avg"]
    return markdown_table(header, rows) + "\n"
