"""Published rewrites replayed from a file: the TongSearch-QR release format or our JSONL output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.errors import BackendError, InputError, MissingRewriteError
from tsqr_plugins.params import GenerationParams
from tsqr_plugins.prompts import DEFAULT_PROMPT_ID, PROMPTS, Prompt, query_from_messages
from tsqr_plugins.queryfile import file_lines
from tsqr_plugins.textfile import parse_json, read_text

ON_MISSING = ("error", "fallback")


def normalize_space(text: str) -> str:
    """Whitespace folded to single spaces: lets one-line inputs match multi-line published queries."""
    return " ".join(text.split())


def load_rewrite_file(path: Path) -> dict[str, str]:
    """``{original query: rewrite}`` from a release JSON object or from ``tsqr rewrite`` JSONL.

    JSONL rows that fell back carry no rewrite and are skipped, so their queries count as missing.
    """
    if not path.is_file():
        raise InputError(f"rewrite file {path} does not exist")
    raw = read_text(path)
    if raw.lstrip().startswith("{") and not path.suffix == ".jsonl":
        data = parse_json(raw, str(path))
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise InputError(f"{path} must be a JSON object mapping each original query to its rewrite (strings)")
        return data
    rewrites = {}
    for number, line in enumerate(file_lines(raw), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            original, text = row["original"], row["text"]
        except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as error:
            raise InputError(
                f"{path}:{number}: expected a JSON object with 'original' and 'text' ({type(error).__name__}: {error})"
            ) from error
        if not row.get("fallback", False):
            rewrites[original] = text
    return rewrites


class FileBackend(Backend):
    """Published rewrites replayed from a file, looked up by the exact original query text, then by
    whitespace-folded text (one-line inputs match multi-line BRIGHT queries). Never cached: the file
    already is one.

    Args:
        path: A release JSON object (``{query: rewrite}``) or ``tsqr rewrite`` JSONL output (rows that
            fell back are skipped).
        on_missing: ``"error"``: a batch with a query the file lacks raises MissingRewriteError
            naming it; ``"fallback"``: the rewriter falls back to the original for that query.

    Raises:
        InputError: The file does not exist or is malformed, or ``on_missing`` is unknown.
    """

    NAME = "file"
    CACHEABLE = False

    def __init__(self, path: str | Path, on_missing: str = "error") -> None:
        if on_missing not in ON_MISSING:
            raise InputError(f"on_missing must be one of {list(ON_MISSING)}, got {on_missing!r}")
        self.path = Path(path)
        self.on_missing = on_missing
        self.rewrites = load_rewrite_file(self.path)
        self._by_folded: dict[str, str] = {}
        for original, rewrite in self.rewrites.items():
            self._by_folded.setdefault(normalize_space(original), rewrite)
        self.model_id = f"file:{self.path.name}"

    def lookup(self, query: str) -> str | None:
        """The rewrite of ``query`` in the file, or None.

        Args:
            query: The original query, exactly or up to whitespace.
        """
        found = self.rewrites.get(query)
        return found if found is not None else self._by_folded.get(normalize_space(query))

    def chat(self, conversations: Sequence[list[dict[str, str]]], params: GenerationParams) -> list[Completion]:
        """Answers conversations whose last user turn is the paper's (``…Query: <query>``), by
        looking its query up.

        Args:
            conversations: Chat messages, one list per completion.
            params: Ignored (the rewrites are already made).

        Raises:
            InputError: A conversation's last user turn is not the paper's.
        """
        queries = []
        for messages in conversations:
            query = query_from_messages(messages)
            if query is None:
                raise InputError("the file backend answers only tsqr prompts (…Query: <query>); this conversation is not one")
            queries.append(query)
        return self.generate(queries, PROMPTS[DEFAULT_PROMPT_ID], params)

    def generate(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams) -> list[Completion]:
        found = [self.lookup(query) for query in queries]
        missing = [query for query, text in zip(queries, found) if text is None]
        if missing and self.on_missing == "error":
            raise MissingRewriteError(
                f"{len(missing)} of {len(queries)} queries have no rewrite in {self.path}; "
                f"first: {missing[0][:120]!r}. Use on_missing='fallback' (--on-missing fallback) to keep "
                "the original query for them."
            )
        return [
            Completion(text=text) if text is not None
            # a documented fallback, so not an InputError
            else Completion.failed(BackendError(f"no rewrite in {self.path.name} for this query"))
            for query, text in zip(queries, found)
        ]
