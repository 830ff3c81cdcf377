"""A persistent rewrite cache in SQLite, safe for several processes writing at once.

One file holds the completions of one backend and model; opening it for another raises
CacheMismatchError. Each entry is keyed by prompt id, sampling parameters and query, so rewrites
made differently are never mixed. Writes are transactions: an interrupted write leaves the file
as it was before it. A cache that cannot be written (a read-only folder or file) is opened to be
read, with a warning naming why; a write that fails (read-only, no space left, locked) raises
CacheError naming the cause and the file. Only SQLite's own verdict (SQLITE_CORRUPT, SQLITE_NOTADB)
calls a file damaged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

from tsqr_plugins.errors import CacheError, CacheMismatchError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rewrites (key TEXT PRIMARY KEY, prompt_id TEXT NOT NULL, "
    "params TEXT NOT NULL, query TEXT NOT NULL, completion TEXT NOT NULL, created REAL NOT NULL)",
)

# SQLite's primary result codes (sqlite3.h) that tsqr names to the user
SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR = 3, 5, 6, 8, 10
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 11, 13, 14, 26
NOT_WRITABLE = (SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_IOERR)
# Before Python 3.11 an sqlite3 error carries no code, only SQLite's words for it
CODE_BY_MESSAGE = (
    ("readonly database", SQLITE_READONLY), ("unable to open database file", SQLITE_CANTOPEN),
    ("database or disk is full", SQLITE_FULL), ("disk I/O error", SQLITE_IOERR),
    ("database disk image is malformed", SQLITE_CORRUPT), ("file is not a database", SQLITE_NOTADB),
    ("database is locked", SQLITE_BUSY), ("database table is locked", SQLITE_LOCKED),
    ("access permission denied", SQLITE_PERM),
)


def sqlite_code(error: sqlite3.Error) -> int | None:
    """SQLite's primary result code of ``error`` (SQLITE_FULL, ...), or None when it has none."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    return next((code for words, code in CODE_BY_MESSAGE if words in str(error)), None)


def cache_key(identity: Mapping[str, str], prompt_id: str, params_key: str, query: str) -> str:
    """sha256 over backend, model, prompt id, sampling parameters and query."""
    payload = json.dumps([dict(sorted(identity.items())), prompt_id, params_key, query], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class RewriteCache:
    """One SQLite rewrite cache file, bound to the identity it was created with.

    Args:
        path: The SQLite file; created with its folder when missing.
        identity: What the file is bound to (e.g. ``{"backend": "transformers", "model":
            "/models/qr-7b"}``, a backend's ``cache_identity()``): stored on creation, and it
            must match on every later open.
        timeout: Seconds to wait for another process's lock before a read or write fails.

    Attributes:
        read_only: None, or why the cache could only be opened to be read (its rewrites are
            answered; ``put_many`` raises CacheError).

    Raises:
        CacheMismatchError: The file was made for another identity, is damaged, is no tsqr cache,
            or is a directory.
        CacheError: The file or its folder cannot be created, or a read-only file cannot be opened.
    """

    def __init__(self, path: str | Path, identity: Mapping[str, str], timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.identity = dict(identity)
        self.timeout = timeout
        self.read_only: str | None = None
        self._lock = threading.Lock()  # the writing connection
        self._read_lock = threading.Lock()  # reads have their own: in WAL mode they never wait for a writer
        self._connection: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        if self.path.is_dir():
            raise CacheMismatchError(f"rewrite cache {self.path} is a directory; name a file (or pass --no-cache)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CacheError(f"cannot create the rewrite cache folder {self.path.parent} "
                             f"({error.strerror or error}); pass another --cache (or --no-cache)") from None
        try:
            self._connection = self._connect()
            self._set_wal(timeout)
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._check_identity()
            self._reader = self._connect()
        except sqlite3.Error as error:
            self._close_connections()
            code = sqlite_code(error)
            if code in (SQLITE_BUSY, SQLITE_LOCKED):
                raise  # another process holds it: a real condition, not a damaged file
            reason = self._why_not_writable() if code in NOT_WRITABLE else None
            if reason is None:
                raise self._failure(error, "opening") from None
            self._open_to_read(reason)

    def _connect(self, read_only: str = "") -> sqlite3.Connection:
        """A connection to the file; ``read_only``: "mode=ro", or "immutable=1" (no locks, no -shm file)."""
        target, uri = self.path, False
        if read_only:
            target, uri = f"file:{quote(str(self.path.absolute()))}?{read_only}", True
        return sqlite3.connect(target, timeout=self.timeout, check_same_thread=False, isolation_level=None,
                               uri=uri)

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

    def _why_not_writable(self) -> str | None:
        """Why this process cannot write the cache (a read-only file, folder or file system), or None."""
        folder = self.path.parent
        try:
            if os.statvfs(folder).f_flag & os.ST_RDONLY:
                return f"the file system holding the cache folder {folder} is mounted read-only"
        except (OSError, AttributeError):  # no statvfs on Windows
            pass
        for file in (self.path, self.path.with_name(self.path.name + "-wal"),
                     self.path.with_name(self.path.name + "-shm")):
            if file.exists() and not os.access(file, os.W_OK):
                return f"the cache file {file} is read-only"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"the cache folder {folder} is read-only"
        return None

    def _open_to_read(self, reason: str) -> None:
        """The cache opened to be read (its rewrites answered, new ones not stored), or CacheError
        when there is nothing to read."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            raise CacheError(f"cannot create the rewrite cache {self.path}: {reason}; pass another --cache "
                             "or set TSQR_CACHE_DIR (or pass --no-cache)")
        last: sqlite3.Error | None = None
        # mode=ro still needs the -shm file of a WAL database; in a read-only folder without one,
        # only an immutable open reads it
        for mode in ("mode=ro", "immutable=1"):
            try:
                self._connection = self._connect(mode)
                stored = dict(self._connection.execute("SELECT name, value FROM meta").fetchall())
                self._reader = self._connect(mode)
                break
            except sqlite3.Error as error:
                self._close_connections()
                last = error
                if sqlite_code(error) not in NOT_WRITABLE:
                    raise self._failure(error, "opening") from None
        else:
            raise CacheError(f"cannot open the rewrite cache {self.path} to read it: {reason} ({last}); "
                             "pass another --cache (or --no-cache)") from None
        self.read_only = reason
        self._check_stored(stored)
        logger.warning("rewrite cache %s is only read: %s. The rewrites it holds are answered, new ones are "
                       "not stored (pass another --cache to keep them)", self.path, reason)

    def _failure(self, error: sqlite3.Error, doing: str) -> CacheError:
        """What went wrong with the file, in words: SQLite's result code, never a guess."""
        code = sqlite_code(error)
        retry = "pass another --cache (or --no-cache)"
        if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
            return CacheMismatchError(f"rewrite cache {self.path} is damaged or not a SQLite file ({error}); "
                                      f"delete it to start a new one, or {retry}")
        if code == SQLITE_FULL:
            return CacheError(f"no space left on the device {doing} the rewrite cache {self.path} ({error}); "
                              f"free some space, or {retry}")
        if code in (SQLITE_BUSY, SQLITE_LOCKED):
            return CacheError(f"rewrite cache {self.path} is locked by another process (waited {self.timeout:g} s "
                              f"{doing} it)")
        if code in NOT_WRITABLE:
            verb = {"opening": "open", "reading": "read", "writing": "write"}[doing]
            reason = self.read_only or self._why_not_writable()
            if reason:
                return CacheError(f"cannot {verb} the rewrite cache {self.path}: {reason} ({error}); {retry}")
            if code == SQLITE_IOERR:
                return CacheError(f"disk I/O error {doing} the rewrite cache {self.path} ({error}); {retry}")
            return CacheError(f"cannot {verb} the rewrite cache {self.path} ({error}); {retry}")
        if doing == "opening":  # a SQLite file with other tables, or tables of another shape
            return CacheMismatchError(f"rewrite cache {self.path} is not a tsqr cache ({error}); {retry}")
        return CacheError(f"rewrite cache {self.path} failed {doing} ({error})")

    def _check_identity(self) -> None:
        wanted = {**self.identity, "schema": SCHEMA_VERSION}
        with self._lock:
            try:
                self._connection.execute("BEGIN IMMEDIATE")
                for statement in SCHEMA:
                    self._connection.execute(statement)
                self._connection.executemany(
                    "INSERT OR IGNORE INTO meta(name, value) VALUES (?, ?)", sorted(wanted.items())
                )
                stored = dict(self._connection.execute("SELECT name, value FROM meta").fetchall())
                self._connection.execute("COMMIT")
            except BaseException:
                self._roll_back()
                raise
        self._check_stored(stored)

    def _check_stored(self, stored: dict[str, str]) -> None:
        wanted = {**self.identity, "schema": SCHEMA_VERSION}
        if stored != wanted:
            self._close_connections()
            raise CacheMismatchError(
                f"rewrite cache {self.path} was made by {stored}, not {wanted}; rewrites of different "
                "backends or models are never mixed. Use another cache path, or delete this file."
            )

    def _roll_back(self) -> None:
        """Undo the open transaction, if SQLite has not already: on SQLITE_FULL (and some I/O
        errors) it rolls back by itself, and a second ROLLBACK's error would hide the cause."""
        if self._connection is not None and self._connection.in_transaction:
            try:
                self._connection.execute("ROLLBACK")
            except sqlite3.Error as error:
                logger.debug("rewrite cache %s: rollback failed: %s", self.path, error)

    def key(self, prompt_id: str, params_key: str, query: str) -> str:
        """The entry key: sha256 of this cache's identity, ``prompt_id``, ``params_key`` and ``query``.

        Args:
            prompt_id: The prompt's id.
            params_key: ``GenerationParams.key()`` of the sampling parameters.
            query: The original query.
        """
        return cache_key(self.identity, prompt_id, params_key, query)

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """The stored completions of those ``keys`` that are in the cache.

        Args:
            keys: Entry keys from :meth:`key`.

        Returns:
            ``{key: completion}`` for the hits only.

        Raises:
            CacheError: The file cannot be read (the message names the cause).
        """
        keys = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        with self._read_lock:
            try:
                for start in range(0, len(keys), 500):  # SQLite caps bound parameters per statement
                    chunk = keys[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = self._reader.execute(
                        f"SELECT key, completion FROM rewrites WHERE key IN ({marks})", chunk
                    ).fetchall()
                    found.update(rows)
            except sqlite3.Error as error:
                raise self._failure(error, "reading") from error
        return found

    def put_many(self, entries: Iterable[tuple[str, str, str, str, str]]) -> dict[str, str]:
        """Store rows in one transaction; an entry already there is kept.

        Args:
            entries: ``(key, prompt_id, params_key, query, completion)`` tuples.

        Returns:
            ``{key: completion}`` of the entries that were already there with another completion
            (stored meanwhile by a concurrent writer): what the cache answers for them from now on.

        Raises:
            CacheError: The cache is only read, or the write failed (read-only, no space left,
                locked); then none of ``entries`` is stored.
        """
        now = time.time()
        rows = [(*entry, now) for entry in entries]
        if not rows:
            return {}
        if self.read_only:
            raise CacheError(f"rewrite cache {self.path} is only read ({self.read_only}); "
                             f"{len(rows)} new rewrite{'' if len(rows) == 1 else 's'} not stored")
        with self._lock:
            try:
                self._connection.execute("BEGIN IMMEDIATE")
                changes = self._connection.total_changes
                self._connection.executemany(
                    "INSERT OR IGNORE INTO rewrites(key, prompt_id, params, query, completion, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                kept = {} if self._connection.total_changes - changes == len(rows) else self._kept(rows)
                self._connection.execute("COMMIT")
            except sqlite3.Error as error:
                self._roll_back()
                raise self._failure(error, "writing") from error
            except BaseException:
                self._roll_back()
                raise
        return kept

    def _kept(self, rows: list[tuple]) -> dict[str, str]:
        """Within ``put_many``'s transaction: the stored completions of ``rows`` that differ from theirs."""
        given = {row[0]: row[4] for row in rows}
        stored: dict[str, str] = {}
        keys = list(given)
        for start in range(0, len(keys), 500):  # SQLite caps bound parameters per statement
            chunk = keys[start : start + 500]
            stored.update(self._connection.execute(
                f"SELECT key, completion FROM rewrites WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall())
        return {key: text for key, text in stored.items() if text != given[key]}

    def __len__(self) -> int:
        with self._lock:
            return self._connection.execute("SELECT COUNT(*) FROM rewrites").fetchone()[0]

    def _close_connections(self) -> None:
        for connection in (self._reader, self._connection):
            if connection is not None:
                connection.close()
        self._reader = self._connection = None

    def close(self) -> None:
        """Close both connections to the file."""
        with self._read_lock, self._lock:
            self._close_connections()
