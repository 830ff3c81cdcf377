"""The out-of-process load test, briefly: 64 clients in one process against `tsqr serve` in its
own, on the file engine and in front of a sleeping upstream, with a queue small enough for 429s.
Speed is reported by benchmarks/service_load.py (figures in benchmarks/RESULTS.md); this test
asserts only that no answer is mismatched or lost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("uvicorn", reason="tsqr serve needs the 'serve' extra")


@pytest.mark.slow
def test_64_clients_out_of_process_lose_and_mismatch_nothing():
    result = subprocess.run([sys.executable, "benchmarks/service_load.py", "--clients", "64", "--seconds", "4",
                             "--upstream-delay", "0.05", "--max-queue", "32"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "mismatched, lost or failed answers: 0" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("file", "openai"))]
    assert len(rows) == 2 and all(int(row[-7]) > 0 for row in rows), result.stdout  # requests were made
