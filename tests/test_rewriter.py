"""The Rewriter's contract: originals kept, batch and single agree, fail-open, strict, bad input.

The backends here are small Backend subclasses that fail on purpose; the thing under test is the
Rewriter, which must handle them.
"""

import logging
import threading
import time

import pytest

from tsqr_plugins import Rewriter
from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.backends.file import FileBackend
from tsqr_plugins.errors import BackendError, BackendTimeout, EmptyQueryError, InputError, MissingRewriteError


class RaisingBackend(Backend):
    NAME = "raising"
    model_id = "raising"

    def generate(self, queries, prompt, params):
        raise ConnectionError("server went away")


class HeldBackend(Backend):
    """Answers only when released (or after 30 s): the caller's time budget runs out first, always."""

    NAME = "held"
    model_id = "held"

    def __init__(self):
        self.release = threading.Event()
        self.answered = threading.Event()

    def generate(self, queries, prompt, params):
        self.release.wait(30)
        self.answered.set()
        return [Completion(text="late") for _ in queries]


class EchoBackend(Backend):
    """Answers each query with a fixed transformation and counts calls."""

    NAME = "echo"
    model_id = "echo"

    def __init__(self, answer=lambda q: f"rewritten: {q}"):
        self.answer = answer
        self.calls = []

    def generate(self, queries, prompt, params):
        self.calls.append(list(queries))
        return [Completion(text=self.answer(q)) if q != "bad item" else Completion.failed(BackendError("item failed"))
                for q in queries]


@pytest.fixture
def rewrites_file(tmp_path):
    path = tmp_path / "rewrites.json"
    path.write_text('{"alpha?": "alpha rewritten", "beta\\nsecond line": "beta rewritten"}', encoding="utf-8")
    return path


def test_each_result_keeps_its_original_and_batch_equals_single(rewrites_file):
    rewriter = Rewriter(FileBackend(rewrites_file))
    batch = rewriter.rewrite_batch(["alpha?", "beta\nsecond line", "alpha?"])
    assert [r.original for r in batch] == ["alpha?", "beta\nsecond line", "alpha?"]
    assert [r.text for r in batch] == ["alpha rewritten", "beta rewritten", "alpha rewritten"]
    assert [rewriter.rewrite(q) for q in ["alpha?", "beta\nsecond line"]] == batch[:2]
    assert batch[0].model == "file:rewrites.json" and batch[0].prompt_id == "tsqr-v1" and not batch[0].fallback


def test_identical_queries_in_a_batch_are_generated_once():
    backend = EchoBackend()
    Rewriter(backend).rewrite_batch(["a", "b", "a", "a"])
    assert backend.calls == [["a", "b"]]


def test_backend_error_falls_back_to_the_original_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        result = Rewriter(RaisingBackend()).rewrite("what is BM25?")
    assert result.fallback and result.text == "what is BM25?" and "server went away" in result.reason
    assert "fell back" in caplog.text


def test_strict_raises_backend_errors():
    with pytest.raises(BackendError, match="server went away"):
        Rewriter(RaisingBackend(), strict=True).rewrite("q")


def test_time_budget_falls_back_or_raises_when_strict():
    backend = HeldBackend()
    result = Rewriter(backend, timeout=0.2).rewrite("slow query")
    assert result.fallback and "time budget" in result.reason
    assert not backend.answered.is_set()  # the fallback came while the backend still had no answer
    backend.release.set()
    held = HeldBackend()
    with pytest.raises(BackendTimeout):
        Rewriter(held, timeout=0.2, strict=True).rewrite("slow query")
    held.release.set()


def test_one_failed_item_does_not_sink_the_batch():
    results = Rewriter(EchoBackend()).rewrite_batch(["good", "bad item"])
    assert not results[0].fallback and results[0].text == "rewritten: good"
    assert results[1].fallback and results[1].text == "bad item"


def test_empty_model_output_is_a_fallback():
    result = Rewriter(EchoBackend(answer=lambda q: "  \n")).rewrite("q")
    assert result.fallback and "empty" in result.reason


def test_think_mode_unparseable_output_is_a_fallback_not_a_crash():
    rewriter = Rewriter(EchoBackend(answer=lambda q: "<think>no answer tag"), prompt="tsqr-think-v1")
    assert rewriter.rewrite("q").fallback
    good = Rewriter(EchoBackend(answer=lambda q: "<think>t</think><answer>final</answer>"), prompt="tsqr-think-v1")
    assert good.rewrite("q").text == "final"


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_queries_are_rejected_clearly(bad):
    with pytest.raises(EmptyQueryError, match="query 1 is empty"):
        Rewriter(EchoBackend()).rewrite_batch(["fine", bad])


def test_non_string_input_is_rejected():
    with pytest.raises(InputError):
        Rewriter(EchoBackend()).rewrite_batch("not a list")
    with pytest.raises(InputError, match="int"):
        Rewriter(EchoBackend()).rewrite_batch([3])


def test_missing_query_in_a_file_is_an_error_naming_it_or_a_fallback_by_option(rewrites_file):
    with pytest.raises(MissingRewriteError, match="gamma"):
        Rewriter(FileBackend(rewrites_file)).rewrite_batch(["alpha?", "gamma"])
    results = Rewriter(FileBackend(rewrites_file, on_missing="fallback")).rewrite_batch(["alpha?", "gamma"])
    assert [r.fallback for r in results] == [False, True] and results[1].text == "gamma"


def test_combined_query_for_each_mode(rewrites_file):
    result = Rewriter(FileBackend(rewrites_file)).rewrite("alpha?")
    assert result.combined() == "alpha rewritten"
    assert result.combined("concat", repeat=2) == "alpha? alpha? alpha rewritten"
    assert result.combined("both") == ("alpha?", "alpha rewritten")
