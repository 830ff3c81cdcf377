"""Query files: JSONL (``{"query_id", "text"}``), TSV (``id<TAB>text``) or plain text (one per line)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tsqr_plugins.errors import InputError
from tsqr_plugins.textfile import parse_json, read_text

ID_FIELDS = ("query_id", "qid", "id", "_id")
TEXT_FIELDS = ("text", "query")


@dataclass(frozen=True)
class Query:
    query_id: str
    text: str


def detect_format(path: Path, first_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".tsv":
        return "tsv"
    if suffix in (".txt", ".text"):
        return "text"
    return "jsonl" if first_line.lstrip().startswith("{") else "text"


def read_queries(path: str | Path) -> list[Query]:
    """Every query of the file, in order. Blank lines are skipped; anything else that is not a
    query (bad JSON, a TSV line without a tab, an empty text, a repeated id) is an InputError
    naming the file and line, so nothing is silently dropped.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"query file {path} is a directory; pass the file of queries")
    if not path.is_file():
        raise InputError(f"query file {path} does not exist")
    lines = file_lines(read_text(path))
    kind = detect_format(path, next((line for line in lines if line.strip()), ""))
    parse = {"jsonl": parse_jsonl_line, "tsv": parse_tsv_line, "text": parse_text_line}[kind]
    queries: list[Query] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        query = parse(line, number, where)
        if not query.text.strip():
            raise InputError(f"{where}: the query text is empty")
        if query.query_id in seen:
            raise InputError(f"{where}: query id {query.query_id!r} appears twice")
        seen.add(query.query_id)
        queries.append(query)
    return queries


def file_lines(text: str) -> list[str]:
    """Lines ending at \n (or \r\n) only: str.splitlines() also splits at U+2028, U+0085 and the
    other separators that JSON strings written with ensure_ascii=False (ours included) hold raw."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def parse_jsonl_line(line: str, number: int, where: str) -> Query:
    row = parse_json(line, where)
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object with 'query_id' and 'text'")
    text = next((row[field] for field in TEXT_FIELDS if field in row), None)
    if not isinstance(text, str):
        raise InputError(f"{where}: no string field 'text' (or 'query')")
    query_id = next((row[field] for field in ID_FIELDS if field in row), number)
    return Query(str(query_id), text)


def parse_tsv_line(line: str, number: int, where: str) -> Query:
    query_id, tab, text = line.partition("\t")
    if not tab:
        raise InputError(f"{where}: expected 'id<TAB>text'")
    return Query(query_id.strip(), text)


def parse_text_line(line: str, number: int, where: str) -> Query:
    return Query(str(number), line)


def check_output(path: str | Path, *inputs: str | Path, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output that would replace an input, cannot be written, or
    exists when ``overwrite`` is not given (the rule of every tsqr command that writes results)."""
    path = Path(path)
    for source in inputs:
        if Path(source).exists() and path.exists() and path.resolve() == Path(source).resolve():
            raise InputError(f"--output {path} is the input file; choose another path")
    if path.is_dir():
        raise InputError(f"--output {path} is a directory; name a file inside it")
    if path.exists() and not overwrite:
        raise InputError(f"--output {path} already exists; pass --overwrite to replace it")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--output {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK):
        raise InputError(f"--output {path}: {parent} is not writable")
    return path


@contextmanager
def atomic_output(path: str | Path) -> Iterator[IO[str]]:
    """A file written under a temporary name and renamed into place only when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def write_jsonl(handle: IO[str], rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        line = json.dumps(row, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (from a "\ud800" escape): keep it, escaped
            line = json.dumps(row)
        handle.write(line + "\n")
