"""A persistent rewrite cache in SQLite, safe for several processes writing at once.

One file holds the completions of one backend and model; opening it for another raises
CacheMismatchError. Each entry is keyed by prompt id, sampling parameters and query, so rewrites
made differently are never mixed. Writes are transactions: an interrupted write leaves the file
as it was before it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from tsqr_plugins.errors import CacheMismatchError

SCHEMA_VERSION = "1"

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rewrites (key TEXT PRIMARY KEY, prompt_id TEXT NOT NULL, "
    "params TEXT NOT NULL, query TEXT NOT NULL, completion TEXT NOT NULL, created REAL NOT NULL)",
)


def cache_key(identity: Mapping[str, str], prompt_id: str, params_key: str, query: str) -> str:
    """sha256 over backend, model, prompt id, sampling parameters and query."""
    payload = json.dumps([dict(sorted(identity.items())), prompt_id, params_key, query], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class RewriteCache:
    """``identity`` (e.g. ``{"backend": "transformers", "model": "/models/qr-7b"}``) is stored in the
    file on creation and must match on every later open.
    """

    def __init__(self, path: str | Path, identity: Mapping[str, str], timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.identity = dict(identity)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the writing connection
        self._read_lock = threading.Lock()  # reads have their own: in WAL mode they never wait for a writer
        if self.path.is_dir():
            raise CacheMismatchError(f"rewrite cache {self.path} is a directory; name a file (or pass --no-cache)")
        try:
            self._connection = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False,
                                               isolation_level=None)
            self._set_wal(timeout)
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._check_identity()
            self._reader = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False, isolation_level=None)
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise  # another process holds it: a real condition, not a damaged file
            raise self._unusable(error) from None
        except sqlite3.DatabaseError as error:  # not a database, truncated, or another program's tables
            raise self._unusable(error) from None

    def _set_wal(self, timeout: float) -> None:
        """WAL mode, waiting for other processes: SQLite answers "database is locked" to a journal
        mode change at once, without its busy timeout, while another connection opens the file
        (seen with four processes creating one cache together)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _unusable(self, error: Exception) -> CacheMismatchError:
        return CacheMismatchError(
            f"rewrite cache {self.path} is damaged or not a tsqr cache ({error}); delete it to start a "
            "new one, or pass another --cache (or --no-cache)")

    def _check_identity(self) -> None:
        wanted = {**self.identity, "schema": SCHEMA_VERSION}
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                for statement in SCHEMA:
                    self._connection.execute(statement)
                self._connection.executemany(
                    "INSERT OR IGNORE INTO meta(name, value) VALUES (?, ?)", sorted(wanted.items())
                )
                stored = dict(self._connection.execute("SELECT name, value FROM meta").fetchall())
                self._connection.execute("COMMIT")
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
        if stored != wanted:
            raise CacheMismatchError(
                f"rewrite cache {self.path} was made by {stored}, not {wanted}; rewrites of different "
                "backends or models are never mixed. Use another cache path, or delete this file."
            )

    def key(self, prompt_id: str, params_key: str, query: str) -> str:
        return cache_key(self.identity, prompt_id, params_key, query)

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        with self._read_lock:
            for start in range(0, len(keys), 500):  # SQLite caps bound parameters per statement
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._reader.execute(
                    f"SELECT key, completion FROM rewrites WHERE key IN ({marks})", chunk
                ).fetchall()
                found.update(rows)
        return found

    def put_many(self, entries: Iterable[tuple[str, str, str, str, str]]) -> None:
        """Store ``(key, prompt_id, params_key, query, completion)`` rows in one transaction."""
        now = time.time()
        rows = [(*entry, now) for entry in entries]
        if not rows:
            return
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                self._connection.executemany(
                    "INSERT OR IGNORE INTO rewrites(key, prompt_id, params, query, completion, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._connection.execute("COMMIT")
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._connection.execute("SELECT COUNT(*) FROM rewrites").fetchone()[0]

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()
        with self._lock:
            self._connection.close()
