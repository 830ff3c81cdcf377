import pytest

from tsqr_plugins import GenerationParams, Rewriter
from tsqr_plugins.backends.transformers import TransformersBackend
from tsqr_plugins.errors import InputError, UnparseableCompletion

GREEDY = GenerationParams.preset("greedy", max_tokens=12)


def test_batched_generation_keeps_order_and_originals(tiny_backend):
    queries = ["why do moths fly to light", "a", "sort a list of dictionaries in python by a key please"]
    results = Rewriter(tiny_backend, params=GREEDY).rewrite_batch(queries)
    assert [r.original for r in results] == queries
    assert all(not r.fallback and r.text for r in results)
    assert all(r.model == tiny_backend.model_id for r in results)


def test_greedy_is_deterministic_and_left_padding_does_not_change_it(tiny_backend):
    rewriter = Rewriter(tiny_backend, params=GREEDY)
    queries = ["short", "a much longer query about insects and the moon at night"]
    batch = [r.text for r in rewriter.rewrite_batch(queries)]
    assert batch == [r.text for r in rewriter.rewrite_batch(queries)]
    assert batch == [rewriter.rewrite(q).text for q in queries]


def test_seeded_sampling_is_reproducible(tiny_backend):
    params = GenerationParams.preset("paper", max_tokens=12, seed=123)
    rewriter = Rewriter(tiny_backend, params=params)
    assert rewriter.rewrite("moths").text == rewriter.rewrite("moths").text


def test_query_longer_than_the_context_is_truncated_not_a_crash(tiny_backend):
    huge = "insects light moon navigation " * 2000  # far beyond the tiny model's 1024 positions
    results = Rewriter(tiny_backend, params=GREEDY).rewrite_batch([huge, "short query"])
    assert [r.fallback for r in results] == [False, False]
    assert results[0].original == huge


def test_think_mode_on_a_model_that_ignores_the_format_falls_back_or_raises(tiny_backend):
    result = Rewriter(tiny_backend, "tsqr-think-v1", GREEDY).rewrite("why do moths fly to light")
    assert result.fallback and result.raw is not None
    with pytest.raises(UnparseableCompletion):
        Rewriter(tiny_backend, "tsqr-think-v1", GREEDY, strict=True).rewrite("why do moths fly to light")


def test_a_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(Exception) as raised:
        TransformersBackend(str(tmp_path / "no-such-model"))
    assert "no-such-model" in str(raised.value)


def test_max_tokens_that_leave_no_room_for_the_query_is_a_clear_error(tiny_backend):
    too_long = GenerationParams.preset("greedy", max_tokens=5000)  # a 1024-position model
    with pytest.raises(InputError, match="lower max_tokens"):
        Rewriter(tiny_backend, params=too_long).rewrite("q")  # a caller mistake: raised even fail-open
