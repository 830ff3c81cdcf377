"""`python -m build` gives a wheel and an sdist that install in a fresh virtual environment with
the package data, and the installed `tsqr` runs from there (tsqr is not on PyPI: the README says
to install from a clone or such a wheel)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
DATA_FILES = ("tsqr_plugins/data/sample/rewrites.json", "tsqr_plugins/data/sample/queries.jsonl",
              "tsqr_plugins/data/bright-sample/rewrites.json", "tsqr_plugins/data/bright-sample/documents/biology.jsonl")


def run(*command, cwd=None):
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result.stdout


def source_copy(target: Path) -> Path:
    """The working tree's tracked and new files (build writes build/ and egg-info beside them)."""
    listed = run("git", "ls-files", "-co", "--exclude-standard", cwd=REPO).splitlines()
    for name in listed:
        source = REPO / name
        if source.is_file() and not name.startswith(("tests/", "integrations/llamaindex/")):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def fresh_venv(path: Path) -> Path:
    run(sys.executable, "-m", "venv", path)
    return path / "bin"


def test_wheel_and_sdist_install_in_a_fresh_venv_and_run(tmp_path):
    pytest.importorskip("build", reason="python -m build needs the 'dev' extra")
    source = source_copy(tmp_path / "src")
    run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("tsqr-*.whl")
    (sdist,) = (tmp_path / "dist").glob("tsqr-*.tar.gz")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(DATA_FILES) <= names, set(DATA_FILES) - names
    assert any(name.endswith("entry_points.txt") for name in names)
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert set(DATA_FILES) | {"pyproject.toml", "README.md"} <= members

    # the wheel, with its dependencies from the index, in a venv that has nothing else
    bin_dir = fresh_venv(tmp_path / "venv")
    run(bin_dir / "pip", "install", "-q", wheel)
    elsewhere = tmp_path / "elsewhere"  # not the clone: nothing may come from the source tree
    elsewhere.mkdir()
    data = Path(run(bin_dir / "python", "-c", "import tsqr_plugins, pathlib; "
                    "print(pathlib.Path(tsqr_plugins.__file__).parent / 'data' / 'sample')", cwd=elsewhere).strip())
    assert "site-packages" in str(data)
    run(bin_dir / "tsqr", "rewrite", "--rewriter", f"file:{data / 'rewrites.json'}", "--input", data / "queries.jsonl",
        "--output", elsewhere / "out.jsonl", "--quiet", cwd=elsewhere)
    rows = [json.loads(line) for line in (elsewhere / "out.jsonl").read_text().splitlines()]
    published = json.loads((data / "rewrites.json").read_text())
    assert rows and all(row["text"] == published[row["original"]] and not row["fallback"] for row in rows)

    # the sdist builds and installs too, data included
    bin_dir = fresh_venv(tmp_path / "venv-sdist")
    run(bin_dir / "pip", "install", "-q", "--no-deps", sdist)
    found = run(bin_dir / "python", "-c", "import importlib.resources as r; "
                "print(r.files('tsqr_plugins').joinpath('data/sample/rewrites.json').is_file())", cwd=elsewhere)
    assert found.strip() == "True"
