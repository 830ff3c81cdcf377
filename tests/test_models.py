"""Model sources are checked in seconds: a missing folder, or a hub id that is neither cached nor
reachable, is one error saying what to pass instead (not a minute of retries and a traceback)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO
from tsqr_plugins.errors import InputError
from tsqr_plugins.models import check_model_source, looks_like_path


def test_missing_folders_and_uncached_hub_ids_offline_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="does not exist"):
        check_model_source(str(tmp_path / "runs" / "no-such-checkpoint"))
    with pytest.raises(InputError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        check_model_source("TongSearch/TongSearch-QR-7B-not-cached")
    check_model_source(str(tmp_path))  # an existing folder is fine
    assert looks_like_path("runs/train/tiny-grpo") and not looks_like_path("BAAI/bge-base-en-v1.5")


def test_cli_commands_answer_in_seconds_naming_the_model(tmp_path):
    """`tsqr rewrite --rewriter transformers` with a missing path, and `tsqr eval --rewrite-gain` with
    the default (uncached) gain model offline: exit 2 with the fix, not minutes of retries."""
    queries = tmp_path / "q.txt"
    queries.write_text("why do moths circle lamps?\n")
    env_offline = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    cases = [
        (["rewrite", "--rewriter", "transformers", "--model", str(tmp_path / "missing" / "model"),
          "--input", str(queries), "--output", str(tmp_path / "o.jsonl")], "does not exist"),
        (["eval", "--dataset", "sample", "--rewriter", f"file:{REPO / 'tsqr_plugins/data/bright-sample/rewrites.json'}",
          "--rewrite-gain", "--output", str(tmp_path / "e")],
         "--gain-model minilm"),
    ]
    for args, message in cases:
        done = subprocess.run([sys.executable, "-m", "tsqr_plugins.cli", *args], capture_output=True, text=True,
                              cwd=REPO, env={**env_offline, "HOME": str(tmp_path)}, timeout=120)
        assert done.returncode == 2, done.stderr[-2000:]
        assert message in done.stderr and "Traceback" not in done.stderr
