"""The conformance tests every adapter passes (like PyTerrier's ``testing.py``).

Subclass ``AdapterConformance`` in a pytest module as ``class TestMyAdapter(AdapterConformance)``,
index ``CORPUS`` with the host's own machinery, and provide three things:

- a fixture ``make_adapter`` returning ``factory(rewriter) -> adapter`` (``rewriter`` may be
  ``None``: the host searching without rewriting),
- ``search(adapter, queries) -> list[list[str]]``: the top ``K`` document ids per query, one
  host call per query,
- ``search_batch(adapter, queries)``: the same through the adapter's batch path,
- ``last_rewrites(adapter) -> list[Rewrite]``: the rewrites of the latest call, in query order.

The checks: the rewrite reaches the host and changes what it retrieves, the original query is
kept, batch and single agree, a failing rewriter falls back to the original query (and a strict
one raises), empty queries are a clear error, and a very long query still gets an answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from ..backends.base import Backend, Completion
from ..backends.file import FileBackend
from ..core import Rewrite, Rewriter
from ..errors import BackendError, InputError

CORPUS = {
    "d1": "Transverse orientation: insects keep the moon at a fixed angle to fly straight.",
    "d2": "Street lamps use sodium or LED bulbs and light the road at night.",
    "d3": "Moth caterpillars eat leaves before they pupate.",
    "d4": "The dorsal light response makes insects tilt their back toward the brightest light.",
    "d5": "Lamps, lamps, lamps: a catalogue of street lamps and lamp posts.",
}
QUERY = "Why do moths circle street lamps?"
REWRITE = "Insects use transverse orientation and the dorsal light response to the moon."
RELEVANT = {"d1", "d4"}  # what the rewrite names, and the bare query's words miss
OTHER_QUERIES = ["dorsal light", "lamp posts at night"]  # not in the rewrite file
K = 3


class FailingBackend(Backend):
    """A backend whose every call raises, as an unreachable server would."""

    NAME = "failing"
    model_id = "failing"

    def generate(self, queries, prompt, params) -> list[Completion]:
        raise ConnectionError("the inference server is unreachable")


# A very long query whose rewrite is as long (a model echoing its input): thousands of repeated and
# distinct terms, more than the engines' default 1,024 boolean clauses.
LONG_QUERY = "street lamps " * 2000 + " ".join(f"word{i}" for i in range(1500))
LONG_REWRITE = "transverse orientation of insects " + " ".join(f"term{i}" for i in range(3000))


def file_rewriter(directory: Path, **kwargs) -> Rewriter:
    """A rewriter that knows the rewrites of ``QUERY`` and ``LONG_QUERY``; other queries fall back
    to themselves."""
    path = Path(directory) / "conformance-rewrites.json"
    path.write_text(json.dumps({QUERY: REWRITE, LONG_QUERY: LONG_REWRITE}))
    return Rewriter(FileBackend(path, on_missing="fallback"), **kwargs)


def slow_rewriter(directory: Path, delay: float, **kwargs) -> Rewriter:
    """A rewriter that knows the rewrite of ``QUERY`` and takes ``delay`` seconds for each batch
    (a slow model, for anytime rewriting); other queries fall back to themselves."""
    import time

    class SlowBackend(FileBackend):
        def generate(self, queries, prompt, params):
            time.sleep(delay)
            return super().generate(queries, prompt, params)

    path = Path(directory) / f"slow-rewrites-{delay:g}.json"
    path.write_text(json.dumps({QUERY: REWRITE}))
    return Rewriter(SlowBackend(path, on_missing="fallback"), **kwargs)


# Three rewrites of QUERY, each naming other documents: what several samples bring to a fusion.
SAMPLES = [REWRITE, "Caterpillars eat leaves and pupate into moths.", "Sodium and LED bulbs light the road at night."]


class SamplingBackend(Backend):
    """Samples QUERY's rewrites from ``SAMPLES`` (sample ``i`` is ``SAMPLES[i]``) in one call, as an
    engine with OpenAI's ``n`` does, counting its calls; other queries fail (and fall back)."""

    NAME = "sampling"
    model_id = "sampling"

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], int]] = []

    def generate(self, queries, prompt, params) -> list[Completion]:
        return [row[0] for row in self.generate_samples(queries, prompt, params, 1)]

    def generate_samples(self, queries, prompt, params, n) -> list[list[Completion]]:
        self.calls.append((list(queries), n))
        unknown = BackendError("no samples for this query")
        return [[Completion(text=SAMPLES[i % len(SAMPLES)]) if query == QUERY
                 else Completion.failed(unknown) for i in range(n)] for query in queries]


class OneSampleFails(SamplingBackend):
    """SamplingBackend whose sample 1 of every query fails (falls back): ``rrf`` fuses the
    original's list with samples 0 and 2 only (``core.fused_samples``)."""

    NAME = "one-sample-fails"

    def generate_samples(self, queries, prompt, params, n) -> list[list[Completion]]:
        rows = super().generate_samples(queries, prompt, params, n)
        return [[Completion.failed(BackendError("sample 1 failed")) if i == 1 else one for i, one in enumerate(row)]
                for row in rows]


class AdapterConformance:
    """Shared checks; see the module docstring for what a subclass provides."""

    # Search-engine stages send a blank query on to the engine untouched (it is the caller's own
    # valid request); retrieval adapters refuse it.
    empty_query_passes_through = False

    def search(self, adapter, queries: Sequence[str]) -> list[list[str]]:
        raise NotImplementedError

    def search_batch(self, adapter, queries: Sequence[str]) -> list[list[str]]:
        raise NotImplementedError

    def last_rewrites(self, adapter) -> list[Rewrite]:
        raise NotImplementedError

    def test_rewrite_changes_what_is_retrieved(self, make_adapter, tmp_path):
        (before,) = self.search(make_adapter(None), [QUERY])
        (after,) = self.search(make_adapter(file_rewriter(tmp_path)), [QUERY])
        assert before[0] not in RELEVANT, f"the bare query already finds {before}"
        assert set(after[:2]) == RELEVANT, f"the rewrite did not reach the host: {after}"

    def test_original_query_is_kept(self, make_adapter, tmp_path):
        adapter = make_adapter(file_rewriter(tmp_path))
        self.search(adapter, [QUERY])
        (rewrite,) = self.last_rewrites(adapter)
        assert (rewrite.original, rewrite.text, rewrite.fallback) == (QUERY, REWRITE, False)

    def test_batch_and_single_agree(self, make_adapter, tmp_path):
        adapter = make_adapter(file_rewriter(tmp_path))
        queries = [QUERY, *OTHER_QUERIES]
        batch = self.search_batch(adapter, queries)
        assert [r.original for r in self.last_rewrites(adapter)] == queries
        assert batch == self.search(adapter, queries)

    def test_a_failing_rewriter_falls_back_to_the_original_query(self, make_adapter):
        queries = [QUERY, *OTHER_QUERIES]
        plain = self.search(make_adapter(None), queries)
        adapter = make_adapter(Rewriter(FailingBackend()))
        assert self.search_batch(adapter, queries) == plain
        assert all(r.fallback and r.text == r.original for r in self.last_rewrites(adapter))

    def test_a_strict_rewriter_raises(self, make_adapter):
        adapter = make_adapter(Rewriter(FailingBackend(), strict=True))
        with pytest.raises(BackendError, match="unreachable"):
            self.search(adapter, [QUERY])

    def test_an_empty_query_is_a_clear_error(self, make_adapter, tmp_path):
        adapter = make_adapter(file_rewriter(tmp_path))
        if self.empty_query_passes_through:
            # A search engine's own query: the host answers it as it would without us.
            assert self.search(adapter, ["   "]) == self.search(make_adapter(None), ["   "])
            assert self.last_rewrites(adapter) == []
            return
        with pytest.raises(InputError, match="empty|non-empty"):
            self.search(adapter, ["   "])

    def test_a_very_long_query_still_gets_an_answer(self, make_adapter, tmp_path):
        adapter = make_adapter(file_rewriter(tmp_path))
        (hits,) = self.search(adapter, [LONG_QUERY])
        assert hits and hits[0] in CORPUS
        (rewrite,) = self.last_rewrites(adapter)
        assert rewrite.text == LONG_REWRITE and not rewrite.fallback
