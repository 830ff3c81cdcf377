from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_REWRITES = REPO.parent / "shared" / "data" / "tongsearch-qr"
PUBLISHED_7B = SHARED_REWRITES / "TongSearch-QR-7B_reasoned_BRIGHT_queries.json"
SAMPLE = REPO / "tsqr_plugins" / "data" / "sample"


def skip_unless(condition: bool, reason: str) -> None:
    """Skip with the reason printed in the summary (run pytest -rs to list them)."""
    if not condition:
        pytest.skip(reason)


ENGINES_REQUIRED = os.environ.get("TSQR_ENGINES_REQUIRED") == "1"
ENGINE_URLS = {  # what `make engines` writes into .engines/env
    "elasticsearch": "TSQR_ES_URL",
    "opensearch": "TSQR_OPENSEARCH_URL",
    "opensearch3": "TSQR_OPENSEARCH3_URL",
}


def engine_url(engine: str) -> str:
    """The live engine's URL; skips without one, but fails when `make test` started the engines
    (TSQR_ENGINES_REQUIRED=1): in CI no live test may skip."""
    variable = ENGINE_URLS[engine]
    url = os.environ.get(variable)
    if not url:
        reason = f"{variable} is not set: no {engine} node (`make engines` starts one from Maven Central)"
        if ENGINES_REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    return url.rstrip("/")


@pytest.fixture(autouse=True)
def isolated_cache_dir(tmp_path, monkeypatch):
    """The default rewrite cache goes under the test's tmp dir, never the user's home."""
    monkeypatch.setenv("TSQR_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    pytest.importorskip("transformers", reason="the tiny model needs the 'transformers' extra")
    from tsqr_plugins.testing import build_tiny_qwen2

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_backend(tiny_model):
    from tsqr_plugins.backends.transformers import TransformersBackend

    backend = TransformersBackend(str(tiny_model), device="cpu", batch_size=4)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def published_7b() -> Path:
    skip_unless(PUBLISHED_7B.is_file(), f"the published TongSearch-QR-7B rewrites are not at {PUBLISHED_7B}")
    return PUBLISHED_7B


def published_texts() -> list[str]:
    """Every query and rewrite of both published files: ~3,900 real texts (English, code, math)."""
    import json

    texts: list[str] = []
    for path in sorted(SHARED_REWRITES.glob("*_reasoned_BRIGHT_queries.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        texts += list(data) + list(data.values())
    return list(dict.fromkeys(texts))


@pytest.fixture(scope="session")
def pyserini_analyzer():
    """pyserini's default Lucene analyzer (the reference), where pyserini and Java exist."""
    from tsqr_plugins.lazy import is_installed

    skip_unless(is_installed("pyserini"), "pyserini is not installed (make test installs pyserini 0.25 with Java 17)")
    from tsqr_plugins.java import ensure_java_home

    ensure_java_home()
    from pyserini.analysis import Analyzer, get_lucene_analyzer

    return Analyzer(get_lucene_analyzer())


@contextlib.contextmanager
def indexed_corpus(url: str, prefix: str):
    """A fresh index on a live node holding the conformance CORPUS through the shipped template's
    settings; its name inside ``with``, deleted after."""
    import uuid

    import httpx

    from tsqr_plugins.search.bulk import BulkIndexer
    from tsqr_plugins.testing.conformance import CORPUS

    index = f"{prefix}-{uuid.uuid4().hex[:8]}"
    indexer = BulkIndexer(url)
    try:
        indexer.create_index(index)
        indexer.index(index, list(CORPUS), list(CORPUS.values()), progress=False)
        yield index
    finally:
        httpx.delete(f"{url}/{index}")
        indexer.close()
