import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tsqr_plugins import GenerationParams, Rewriter
from tsqr_plugins.backends.cache import CachedBackend
from tsqr_plugins.cache import RewriteCache
from tsqr_plugins.errors import CacheMismatchError

IDENTITY = {"backend": "transformers", "model": "/models/tiny"}
FAST = GenerationParams.preset("paper", max_tokens=12)


def test_second_run_is_served_from_the_cache_with_identical_text(tiny_backend, tmp_path):
    path = tmp_path / "rewrites.sqlite"
    queries = ["why do moths fly to light", "sort a list of dicts in python"]
    first = Rewriter(CachedBackend(tiny_backend, path), params=FAST).rewrite_batch(queries)
    second = Rewriter(CachedBackend(tiny_backend, path), params=FAST).rewrite_batch(queries)
    assert [r.cached for r in first] == [False, False]
    assert [r.cached for r in second] == [True, True]
    # sampling is on (temperature 0.7): equal text proves nothing was regenerated
    assert [r.text for r in second] == [r.text for r in first]


def test_other_sampling_params_or_prompt_are_not_mixed(tiny_backend, tmp_path):
    path = tmp_path / "rewrites.sqlite"
    Rewriter(CachedBackend(tiny_backend, path), params=FAST).rewrite("q")
    assert not Rewriter(CachedBackend(tiny_backend, path), params=FAST.replace(seed=5)).rewrite("q").cached
    assert not Rewriter(CachedBackend(tiny_backend, path), "tsqr-think-v1", FAST).rewrite("q").cached


def test_a_cache_of_another_model_is_refused(tmp_path):
    path = tmp_path / "c.sqlite"
    RewriteCache(path, IDENTITY).close()
    with pytest.raises(CacheMismatchError, match="never mixed"):
        RewriteCache(path, {**IDENTITY, "model": "/models/other"})


def test_damaged_or_foreign_cache_files_are_a_clear_error(tmp_path):
    good = tmp_path / "good.sqlite"
    cache = RewriteCache(good, IDENTITY)
    cache.put_many([(cache.key("p", "{}", f"q{i}"), "p", "{}", f"q{i}", "x" * 500) for i in range(200)])
    cache.close()
    truncated = tmp_path / "truncated.sqlite"
    truncated.write_bytes(good.read_bytes()[:3000])
    text = tmp_path / "text.sqlite"
    text.write_text("these are not the rewrites you are looking for\n" * 100)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as other:
        other.execute("CREATE TABLE meta (id INTEGER PRIMARY KEY, blob BLOB)")
    for path in (truncated, text, foreign, tmp_path):
        with pytest.raises(CacheMismatchError, match=str(path.name)) as raised:
            RewriteCache(path, IDENTITY)
        assert "--cache" in str(raised.value) or "directory" in str(raised.value), path


def test_failed_generations_are_not_stored(tmp_path):
    from tests.test_rewriter import RaisingBackend

    backend = CachedBackend(RaisingBackend(), tmp_path / "c.sqlite")
    assert Rewriter(backend).rewrite("q").fallback
    assert len(backend.store) == 0


def test_cache_keys_do_not_change_between_releases():
    """A cache file outlives a tsqr version: a rewrite's key (sha256 over the identity, in any
    order, the prompt id, the parameters and the query, as UTF-8 JSON) is the one tsqr 0.1.0
    computed, or every stored rewrite would miss."""
    from tsqr_plugins.cache import cache_key

    query = "Pourquoi le café ☕ refroidit-il?"
    for identity in ({"model": "/models/qr-7b", "backend": "transformers"},
                     {"backend": "transformers", "model": "/models/qr-7b"}):
        assert cache_key(identity, "tsqr-v1", '{"temperature":0.7}', query) == \
            "af1a87725a35b6ccc593bc6a734c35fb29a0b0cff990c73b655958b25b909d42"


def test_a_new_cache_makes_its_folders_and_reads_back_many_keys_at_once(tmp_path):
    """1,200 keys in one get_many (SQLite caps the parameters of one statement: read in chunks)."""
    cache = RewriteCache(tmp_path / "new" / "folder" / "c.sqlite", IDENTITY)
    rows = [(f"k{i}", "tsqr-v1", "{}", f"q{i}", f"completion {i}") for i in range(1200)]
    cache.put_many(rows)
    assert cache.get_many([row[0] for row in rows] + ["absent"]) == {f"k{i}": f"completion {i}" for i in range(1200)}
    assert len(cache) == 1200
    cache.close()


def test_sqlite_errors_are_told_apart_by_sqlites_own_code():
    """The code SQLite gives (extended codes reduced to their primary one) decides; before Python
    3.11 an error has only SQLite's words, which are read instead."""
    from tsqr_plugins.cache import SQLITE_BUSY, SQLITE_FULL, SQLITE_READONLY, sqlite_code

    coded = sqlite3.OperationalError("disk is on fire")
    coded.sqlite_errorcode = SQLITE_FULL
    moved = sqlite3.OperationalError("attempt to write a database that moved")
    moved.sqlite_errorcode = SQLITE_READONLY | (4 << 8)  # SQLITE_READONLY_DBMOVED
    assert (sqlite_code(coded), sqlite_code(moved)) == (SQLITE_FULL, SQLITE_READONLY)
    assert sqlite_code(sqlite3.OperationalError("database is locked")) == SQLITE_BUSY
    assert sqlite_code(sqlite3.OperationalError("no such table: rewrites")) is None


def test_a_read_only_cache_opens_at_once_not_after_the_lock_timeout(tmp_path):
    """Switching to WAL waits out only "database is locked" (another process opening the file), up
    to the busy timeout (60 s by default); a read-only folder's refusal is not waited out, so the
    cache opens to be read at once (waiting out every error took 65 s here). In a child process
    without root's override of file modes (mutmut does not see it: found by hand)."""
    from tests.adversarial.test_second_ring import Echo, run_without_write_override

    folder = tmp_path / "cache"
    folder.mkdir()
    path = folder / "c.sqlite"
    with CachedBackend(Echo(), path) as backend:  # closed: the file alone, no -wal or -shm beside it
        Rewriter(backend).rewrite("moths")
    for read_only in (folder, path):
        mode = read_only.stat().st_mode
        read_only.chmod(0o555 if read_only.is_dir() else 0o444)
        try:
            started = time.monotonic()
            answer, log = run_without_write_override(path)
        finally:
            read_only.chmod(mode)
        assert answer["rewrites"][0] == ["rewritten moths", True, False], log
        assert time.monotonic() - started < 30, f"a read-only {read_only} waited for the lock timeout"


def write_entries(path, worker, count):
    cache = RewriteCache(path, IDENTITY)
    for i in range(count):
        key = cache.key("tsqr-v1", "{}", f"w{worker}-q{i}")
        cache.put_many([(key, "tsqr-v1", "{}", f"w{worker}-q{i}", f"completion {worker} {i}")])
    cache.close()


def test_several_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=write_entries, args=(path, w, 150)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    cache = RewriteCache(path, IDENTITY)
    assert len(cache) == 600
    key = cache.key("tsqr-v1", "{}", "w3-q149")
    assert cache.get_many([key]) == {key: "completion 3 149"}


KILLED_WRITER = """
import sys
from tsqr_plugins.cache import RewriteCache
cache = RewriteCache(sys.argv[1], {"backend": "transformers", "model": "/models/tiny"})
print("ready", flush=True)
i = 0
while True:
    rows = [(f"k{i}-{j}", "tsqr-v1", "{}", f"q{i}-{j}", "x" * 2000) for j in range(200)]
    cache.put_many(rows)
    i += 1
"""


def test_a_writer_killed_mid_write_leaves_a_consistent_cache(tmp_path):
    path = tmp_path / "killed.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while True:  # kill it once some transactions are in, while it writes more
        reader = sqlite3.connect(path, timeout=30)
        committed = reader.execute("SELECT COUNT(*) FROM rewrites").fetchone()[0]
        reader.close()
        if committed >= 400 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    count = connection.execute("SELECT COUNT(*) FROM rewrites").fetchone()[0]
    connection.close()
    assert count > 0 and count % 200 == 0  # whole transactions only
    assert len(RewriteCache(path, IDENTITY)) == count


def test_put_many_keeps_an_entry_already_there_and_says_which(tmp_path):
    """What a writer that lost a race learns: the completion the cache kept, to answer it instead."""
    cache = RewriteCache(tmp_path / "c.sqlite", IDENTITY)
    assert cache.put_many([("k0", "p", "{}", "q", "first")]) == {}
    kept = cache.put_many([("k0", "p", "{}", "q", "second"), ("k1", "p", "{}", "q", "new")])
    assert kept == {"k0": "first"} and cache.get_many(["k0", "k1"]) == {"k0": "first", "k1": "new"}
    assert cache.put_many([("k1", "p", "{}", "q", "new")]) == {}  # the same text kept: nothing to replace
    cache.close()


@pytest.mark.parametrize("samples", [1, 3])
def test_a_rewrite_another_writer_stored_meanwhile_is_answered_as_the_cache_keeps_it(tmp_path, samples):
    """Two processes (or two CachedBackends) generating the same query at once: the one whose write
    loses answers what the cache kept, not its own text, so that every caller sees what a replay
    gives (with samples: sample by sample)."""
    from tsqr_plugins.backends.base import Backend, Completion

    path = tmp_path / "c.sqlite"

    class Racing(Backend):
        """Generates "mine i"; while it generates, another writer stores "theirs i" for sample 0."""

        NAME = "racing"
        model_id = "racing"

        def generate(self, queries, prompt, params):
            return [row[0] for row in self.generate_samples(queries, prompt, params, 1)]

        def generate_samples(self, queries, prompt, params, n):
            assert prompt.id and params is not None  # the caller's prompt and sampling reach the engine
            other = CachedBackend(Echo("theirs"), path)
            Rewriter(other).rewrite("moths")  # sample 0's entry, stored first
            other.close()
            return [[Completion(text=f"mine {i}") for i in range(n)] for _ in queries]

    class Echo(Backend):
        NAME = "racing"
        model_id = "racing"

        def __init__(self, word):
            self.word = word
            self.calls = []

        def generate(self, queries, prompt, params):
            self.calls.append(list(queries))
            return [Completion(text=f"{self.word} 0") for _ in queries]

    rewriter = Rewriter(CachedBackend(Racing(), path))
    first = rewriter.rewrite_samples(["moths"], samples)[0] if samples > 1 else [rewriter.rewrite("moths")]
    assert [r.text for r in first] == ["theirs 0"] + [f"mine {i}" for i in range(1, samples)]
    assert first[0].cached is True
    never = Echo("never")
    again = Rewriter(CachedBackend(never, path))
    replay = again.rewrite_samples(["moths"], samples)[0] if samples > 1 else [again.rewrite("moths")]
    assert [r.text for r in replay] == [r.text for r in first] and never.calls == []  # all from the cache
