"""Evaluation tasks: BRIGHT (hub, local copy, shipped sample) and BEIR-format folders.

A dataset spec is one of:
  ``bright:<task>[,<task>...]`` or ``bright:all``  BRIGHT from ``--bright-dir``/``$TSQR_BRIGHT_DIR``
                                                  (a local copy of the hub dataset), pyserini's own
                                                  resources (runs on pyserini alone), or the hub
  ``sample``                                       the small BRIGHT-layout sample shipped in the package
  ``<folder>``                                     BEIR format (corpus.jsonl, queries.jsonl,
                                                  qrels/test.tsv) or BRIGHT layout (examples/, documents/)
"""

from __future__ import annotations

import csv
import functools
import logging
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from ..errors import InputError, TSQRError
from ..lazy import require
from ..textfile import open_text, parse_json

BRIGHT_TASKS = (
    "biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow",
    "sustainable_living", "leetcode", "pony", "aops", "theoremqa_questions", "theoremqa_theorems",
)
# Column headers as in the paper's table.
SHORT_NAMES = {
    "biology": "Bio", "earth_science": "Earth", "economics": "Econ", "psychology": "Psy",
    "robotics": "Rob", "stackoverflow": "Stack", "sustainable_living": "Sus", "leetcode": "Leet",
    "pony": "Pony", "aops": "AoPS", "theoremqa_questions": "TheoQ", "theoremqa_theorems": "TheoT",
}
BRIGHT_HUB_ID = "xlangai/BRIGHT"
log = logging.getLogger(__name__)


@dataclass
class Task:
    """One retrieval task: a corpus, queries, relevance judgements and per-query exclusions."""

    name: str
    doc_ids: list[str]
    documents: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]
    excluded: dict[str, set[str]] = field(default_factory=dict)
    # pyserini's prebuilt index of this very corpus (BRIGHT's short documents): "bright-<task>"
    prebuilt_index: str | None = None
    # where the queries and judgements came from; a task from pyserini's resources has no texts
    source: str = ""

    @property
    def has_texts(self) -> bool:
        return len(self.documents) == len(self.doc_ids)

    def limit(self, n: int | None) -> "Task":
        if not n or n >= len(self.query_ids):
            return self
        keep = self.query_ids[:n]
        return replace(self, query_ids=keep, queries=self.queries[:n],
                       qrels={q: self.qrels[q] for q in keep if q in self.qrels},
                       excluded={q: self.excluded.get(q, set()) for q in keep})

    @functools.cached_property
    def doc_positions(self) -> dict[str, int]:
        return {doc_id: i for i, doc_id in enumerate(self.doc_ids)}

    def doc_text(self, doc_id: str) -> str:
        return self.documents[self.doc_positions[doc_id]]


def sample_dir() -> Path:
    return Path(str(resources.files("tsqr_plugins") / "data" / "bright-sample"))


def load_tasks(spec: str, bright_dir: str | os.PathLike | None = None,
               long_context: bool = False, pyserini_resources: bool = False) -> list[Task]:
    """The tasks named by a dataset spec (see the module docstring). ``pyserini_resources``: BRIGHT
    tasks that would come from the hub come from pyserini's own topics, qrels and prebuilt index
    when they can be had (for runs on the pyserini retriever alone; such tasks hold no texts)."""
    if spec == "sample":
        return _bright_folder(sample_dir(), None, long_context)
    if spec.startswith("bright:"):
        names = _bright_names(spec[len("bright:"):])
        bright_dir = bright_dir or os.environ.get("TSQR_BRIGHT_DIR")
        if bright_dir:
            tasks = _bright_folder(Path(bright_dir), names, long_context)
        elif pyserini_resources and not long_context:
            return [_bright_from_pyserini(name) for name in names]
        else:
            tasks = [_bright_hub(name, long_context) for name in names]
        if not long_context:  # pyserini publishes indexes of BRIGHT's short documents
            for task in tasks:
                task.prebuilt_index = pyserini_name(task.name)
        return tasks
    folder = Path(spec)
    if not folder.is_dir():
        raise InputError(
            f"dataset {spec!r} is neither 'sample', 'bright:<task>|all' nor a folder; "
            f"BRIGHT tasks: {', '.join(BRIGHT_TASKS)}"
        )
    if (folder / "corpus.jsonl").exists():
        return [_beir_folder(folder)]
    if (folder / "examples").is_dir():
        return _bright_folder(folder, None, long_context)
    raise InputError(
        f"{folder} is not a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) "
        "nor a BRIGHT copy (examples/, documents/)"
    )


def _bright_names(text: str) -> list[str]:
    if text == "all":
        return list(BRIGHT_TASKS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BRIGHT_TASKS]
    if unknown or not names:
        raise InputError(f"unknown BRIGHT task(s) {unknown or text!r}; valid: {', '.join(BRIGHT_TASKS)}, all")
    return names


# -- BRIGHT -----------------------------------------------------------------------------------

def _bright_task(name, examples, documents, long_context) -> Task:
    try:
        return _bright_rows(name, examples, documents, long_context)
    except (KeyError, TypeError) as error:
        raise InputError(f"BRIGHT task {name!r}: a row lacks a field or has the wrong type ({error!r}); "
                         "examples need id, query, excluded_ids, gold_ids, gold_ids_long; documents id, content") from error


def _bright_rows(name, examples, documents, long_context) -> Task:
    gold_key = "gold_ids_long" if long_context else "gold_ids"
    doc_ids = [str(row["id"]) for row in documents]
    texts = [row["content"] if row["content"] is not None else "" for row in documents]
    query_ids, queries, qrels, excluded = [], [], {}, {}
    for row in examples:
        qid = str(row["id"])
        query_ids.append(qid)
        queries.append(row["query"])
        qrels[qid] = {str(doc): 1 for doc in row[gold_key]}
        # "N/A" marks "nothing to exclude" in BRIGHT, exactly as its evaluation treats it.
        excluded[qid] = {str(doc) for doc in row["excluded_ids"] if doc != "N/A"}
    if not query_ids or not doc_ids:
        raise InputError(f"BRIGHT task {name!r} has {len(query_ids)} queries and {len(doc_ids)} documents")
    return Task(name, doc_ids, texts, query_ids, queries, qrels, excluded)


def _bright_folder(root: Path, names: list[str] | None, long_context: bool) -> list[Task]:
    docs_config = "long_documents" if long_context else "documents"
    if names is None:
        names = sorted({_task_of(path) for path in (root / "examples").iterdir() if _task_of(path)},
                       key=lambda n: (BRIGHT_TASKS.index(n) if n in BRIGHT_TASKS else 99, n))
    tasks = []
    for name in names:
        examples = _read_rows(root / "examples", name)
        documents = _read_rows(root / docs_config, name)
        task = _bright_task(name, examples, documents, long_context)
        task.source = "the tsqr sample" if root == sample_dir() else f"BRIGHT copy {root}"
        tasks.append(task)
    return tasks


def _task_of(path: Path) -> str | None:
    if path.suffix in (".jsonl", ".parquet"):
        return path.name.split("-00")[0].removesuffix(path.suffix)
    return None


def _read_rows(folder: Path, name: str) -> list[dict]:
    """Rows of ``<folder>/<name>.jsonl`` or the hub's ``<folder>/<name>-0000x-of-0000y.parquet``."""
    jsonl = folder / f"{name}.jsonl"
    if jsonl.exists():
        return [row for _, row in _jsonl(jsonl)]
    shards = sorted(folder.glob(f"{name}-*.parquet")) + sorted(folder.glob(f"{name}.parquet"))
    if not shards:
        raise InputError(
            f"no {name}.jsonl or {name}-*.parquet in {folder}: this does not look like a copy of "
            f"{BRIGHT_HUB_ID} (expected its examples/, documents/ and long_documents/ folders)"
        )
    parquet = require("pyarrow.parquet", "eval", "reading BRIGHT's parquet files")
    rows = []
    for shard in shards:
        rows.extend(parquet.read_table(shard).to_pylist())
    return rows


def _bright_from_pyserini(name: str) -> Task:
    """pyserini's BRIGHT resources for the task, else the hub's BRIGHT (an error saying both ways
    when neither can be had)."""
    from . import pyserini_bright

    try:
        return pyserini_bright.load(name)
    except pyserini_bright.Unavailable as missing:
        log.warning("BRIGHT %s: %s; loading BRIGHT from the hub instead", name, missing)
        try:
            task = _bright_hub(name, False)
        except TSQRError as error:
            raise TSQRError(f"{error}\nOr let pyserini's own BRIGHT resources serve --retriever pyserini: {missing}") from error
        task.prebuilt_index = pyserini_name(name)
        return task


def pyserini_name(task: str) -> str:
    """pyserini's name for a BRIGHT task's index, topics and qrels."""
    return "bright-" + task.replace("_", "-")


def _bright_hub(name: str, long_context: bool) -> Task:
    how = (
        f"Download it where the hub is reachable (hf download {BRIGHT_HUB_ID} "
        "--repo-type dataset --local-dir BRIGHT), copy the folder here and pass --bright-dir BRIGHT "
        "(or set TSQR_BRIGHT_DIR)."
    )
    try:
        datasets = require("datasets", "eval", "loading BRIGHT from the Hugging Face hub")
    except TSQRError as error:
        raise TSQRError(f"{error}. Or use a local copy of BRIGHT: {how}") from error
    try:
        examples = datasets.load_dataset(BRIGHT_HUB_ID, "examples", split=name)
        documents = datasets.load_dataset(BRIGHT_HUB_ID, "long_documents" if long_context else "documents",
                                          split=name)
    except Exception as error:  # the hub client raises many types when offline
        raise TSQRError(f"could not load BRIGHT task {name!r} from the hub ({type(error).__name__}: "
                        f"{error}). {how}") from error
    task = _bright_task(name, examples, documents, long_context)
    task.source = f"BRIGHT ({BRIGHT_HUB_ID} on the hub)"
    return task


# -- BEIR -------------------------------------------------------------------------------------

def _beir_folder(folder: Path) -> Task:
    doc_ids, texts, seen = [], [], {}
    for line_no, row in _beir_rows(folder / "corpus.jsonl"):
        doc_id = _unique(row, seen, folder / "corpus.jsonl", line_no, "document")
        title = row.get("title") or ""
        text = row.get("text") or ""
        if not isinstance(title, str) or not isinstance(text, str):
            raise InputError(f"{folder / 'corpus.jsonl'}:{line_no}: 'title' and 'text' must be strings")
        doc_ids.append(doc_id)
        texts.append(f"{title} {text}".strip() if title else text)
    all_queries, seen = {}, {}
    for line_no, row in _beir_rows(folder / "queries.jsonl"):
        query_id = _unique(row, seen, folder / "queries.jsonl", line_no, "query")
        if not isinstance(row.get("text"), str):
            raise InputError(f"{folder / 'queries.jsonl'}:{line_no}: 'text' must be a string")
        all_queries[query_id] = row["text"]
    qrels_path = folder / "qrels" / "test.tsv"
    if not qrels_path.exists():
        raise InputError(f"{folder} has no qrels/test.tsv")
    qrels: dict[str, dict[str, int]] = {}
    with open_text(qrels_path, newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle, delimiter="\t"), 1):
            if line_no == 1 and [cell.strip().lower() for cell in row] in QRELS_HEADERS:
                continue  # a header names the columns; a first judgement is never taken for one
            score = _score(row[2]) if len(row) == 3 else None
            if score is None:
                raise InputError(f"{qrels_path}:{line_no}: expected query-id, corpus-id and an integer score, "
                                 f"got {row!r}")
            if row[1] in qrels.get(row[0], {}):
                raise InputError(f"{qrels_path}:{line_no}: query {row[0]!r} and document {row[1]!r} are judged twice")
            qrels.setdefault(row[0], {})[row[1]] = score
    missing = [qid for qid in qrels if qid not in all_queries]
    if missing:
        raise InputError(f"{qrels_path} judges queries missing from queries.jsonl: {missing[:5]}")
    # Only judged queries are run, in queries.jsonl order.
    query_ids = [qid for qid in all_queries if qid in qrels]
    return Task(folder.name, doc_ids, texts, query_ids, [all_queries[q] for q in query_ids], qrels,
                {q: set() for q in query_ids}, source=f"BEIR folder {folder}")


# The header lines BEIR's qrels carry (and the TREC spellings of its columns).
QRELS_HEADERS = (["query-id", "corpus-id", "score"], ["query_id", "corpus_id", "score"], ["qid", "docid", "score"])


def _score(text: str) -> int | None:
    """A judgement's integer grade ("1", "-1", "2.0"), or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _beir_rows(path: Path):
    """(line number, object) of a BEIR JSONL file; a line that is not an object is an error naming it."""
    for line_no, row in _jsonl(path):
        if not isinstance(row, dict):
            raise InputError(f"{path}:{line_no}: a line must be a JSON object, got {type(row).__name__}")
        yield line_no, row


def _unique(row: dict, seen: dict, path: Path, line_no: int, what: str) -> str:
    """The row's ``_id`` as a string, refused when missing or met before (the last one would win)."""
    if not isinstance(row.get("_id"), (str, int)) or isinstance(row.get("_id"), bool):
        raise InputError(f"{path}:{line_no}: every {what} needs an '_id' (a string)")
    key = str(row["_id"])
    if key in seen:
        raise InputError(f"{path}:{line_no}: {what} id {key!r} already on line {seen[key]}")
    seen[key] = line_no
    return key


def _jsonl(path: Path):
    """(line number, value) of each line of a JSONL file."""
    with open_text(path) as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            yield line_no, parse_json(line, f"{path}:{line_no}")
