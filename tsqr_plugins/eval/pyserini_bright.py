"""BRIGHT as pyserini ships it: topics, qrels and exclusions from pyserini's cache (downloaded by
pyserini when the network allows), documents in pyserini's prebuilt ``bright-<task>`` index.

A pyserini user can then evaluate BRIGHT with no copy of the Hugging Face dataset, and the original
queries score as pyserini's own BRIGHT runs do. What each piece is, read in pyserini 1.6.0 and the
Anserini 1.7.1 jar it bundles:
- topics ``bright-<task>`` (``pyserini.search.get_topics``; Anserini's ``Topics.BRIGHT_*``): BRIGHT's
  ids and queries, whitespace folded to single spaces (TSV);
- qrels ``bright-<task>`` (``get_qrels_file``; ``Qrels.BRIGHT_*``): BRIGHT's ``gold_ids``;
- exclusions, for the three tasks that have them (aops, leetcode, theoremqa_questions): pyserini
  1.6 reads BRIGHT's ``excluded_ids`` from the hub (``get_bright_excluded_ids``, pyserini/search/
  _base.py); Anserini 2.x reads ``exclude.bright-<task>.txt`` (``qid docid`` per line) from its qrels
  folder (io/anserini/eval/ExcludeDocs.java). tsqr reads that file beside the qrels when it is
  there, else asks pyserini, and never runs those tasks without their exclusions.
Anserini keeps topics and qrels under the JVM's ``user.home`` (``~/.cache/pyserini/topics-and-qrels``
in 1.7.1; ``$PYSERINI_CACHE/{topics,qrels}`` in 2.x), downloaded from castorini/anserini-tools.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError
from ..textfile import read_text
from .datasets import Task, pyserini_name

log = logging.getLogger(__name__)

EXCLUDING_TASKS = ("aops", "leetcode", "theoremqa_questions")
TOOLS_URL = "https://raw.githubusercontent.com/castorini/anserini-tools/master"


class Unavailable(LookupError):
    """pyserini's BRIGHT resources for a task are not all to be had; the message says what to fetch."""


def load(task: str) -> Task:
    """The BRIGHT task from pyserini's resources, or Unavailable naming each missing piece."""
    from ..java import ensure_java_home, pyserini_version
    from ..search.lucene import PrebuiltUnavailable, fetch_prebuilt_index, index_doc_ids

    version = pyserini_version()
    if version is None or version.startswith("0."):
        raise Unavailable(f"pyserini {version or '(not installed)'} has no BRIGHT topics or indexes "
                          "(they came with pyserini 1.x)")
    ensure_java_home()
    name = pyserini_name(task)
    missing: list[str] = []
    queries = _topics(name, missing)
    qrels_path = _qrels_file(name, missing)
    index = None
    try:
        index = fetch_prebuilt_index(name)
    except PrebuiltUnavailable as error:
        missing.append(str(error))
    if missing:
        raise Unavailable("; ".join(missing))
    qrels = _read_qrels(qrels_path)
    excluded = _exclusions(task, name, qrels_path) if task in EXCLUDING_TASKS else {}
    query_ids = sorted(queries, key=_id_order)
    doc_ids = index_doc_ids(index)
    log.info("BRIGHT %s from pyserini's resources: %d topics, qrels %s, index %s (%d documents)",
             task, len(query_ids), qrels_path, index, len(doc_ids))
    return Task(task, doc_ids, [], query_ids, [queries[q] for q in query_ids],
                {q: qrels.get(q, {}) for q in query_ids}, {q: excluded.get(q, set()) for q in query_ids},
                prebuilt_index=name, source=f"pyserini {version}")


def _id_order(qid: str):
    return (0, int(qid), "") if qid.isdigit() else (1, 0, qid)


def _topics(name: str, missing: list[str]) -> dict[str, str]:
    from pyserini.search import get_topics  # first: importing jnius before pyserini starts a JVM without its jar
    from jnius import JavaException

    try:
        topics = get_topics(name)
    except (JavaException, ValueError) as error:  # Anserini's IOException; ValueError: topics unknown here
        missing.append(f"pyserini's topics {name} are not here and cannot be downloaded ({_first_line(error)}); "
                       f"fetch {TOOLS_URL}/topics/{_topics_file(name)} into {_cache_folder('topics', name)}")
        return {}
    return {str(qid): topic.get("title", "") for qid, topic in topics.items()}


def _qrels_file(name: str, missing: list[str]) -> Path | None:
    from pyserini.search import get_qrels_file  # first, as above
    from jnius import JavaException

    try:
        return Path(get_qrels_file(name))
    except (JavaException, OSError) as error:  # as above; FileNotFoundError: qrels unknown here
        missing.append(f"pyserini's qrels {name} are not here and cannot be downloaded ({_first_line(error)}); "
                       f"fetch {TOOLS_URL}/qrels/qrels.{name}.txt into {_cache_folder('qrels', name)}")
        return None


def _rows(path: Path, width: int, valid, expected: str):
    """The whitespace-separated fields of each non-blank line, or InputError naming the line."""
    for number, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != width or not valid(fields):
            raise InputError(f"{path}:{number}: expected {expected}")
        yield fields


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for qid, _, doc_id, relevance in _rows(path, 4, lambda f: f[3].lstrip("-").isdigit(),
                                           "TREC qrels (query-id 0 doc-id relevance)"):
        qrels.setdefault(qid, {})[doc_id] = int(relevance)
    return qrels


def _exclusions(task: str, name: str, qrels_path: Path) -> dict[str, set[str]]:
    beside = qrels_path.parent / f"exclude.{name}.txt"
    if beside.is_file():
        excluded: dict[str, set[str]] = {}
        for qid, doc_id in _rows(beside, 2, lambda f: True, "'query-id doc-id'"):
            excluded.setdefault(qid, set()).add(doc_id)
        return excluded
    try:  # pyserini 1.6's own way: BRIGHT's excluded_ids from the Hugging Face hub
        from pyserini.search._base import get_bright_excluded_ids

        found = get_bright_excluded_ids(name)
    except Exception as error:  # ImportError on other pyserini versions; the hub client's errors offline
        raise Unavailable(
            f"BRIGHT {task} excludes documents per query, and neither {beside} nor the hub is to be had "
            f"({type(error).__name__}: {_first_line(error)}); fetch {TOOLS_URL}/qrels/{beside.name} into "
            f"{beside.parent}") from None
    return {str(qid): {str(doc) for doc in docs if doc != "N/A"} for qid, docs in found.items()}


def _topics_file(name: str) -> str:
    return f"topics.{name}.tsv.gz"


def _cache_folder(kind: str, name: str) -> str:
    """Where this pyserini's Anserini keeps topics or qrels (it creates the folder when asked)."""
    from jnius import JavaException, autoclass

    try:
        path = autoclass("io.anserini.search.topicreader.TopicReader").getNewTopicsAbsPath(
            autoclass("java.nio.file.Path").of(_topics_file(name)))
        return str(Path(path.toString()).parent)
    except (JavaException, AttributeError):  # another Anserini: name its documented default
        return f"pyserini's cache ($PYSERINI_CACHE/{kind} or ~/.cache/pyserini/topics-and-qrels)"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
