import pytest

from tsqr_plugins import GenerationParams, combine
from tsqr_plugins.errors import InputError


def test_paper_preset_matches_the_released_sampling():
    params = GenerationParams.preset("paper")
    assert (params.temperature, params.top_p, params.top_k, params.repetition_penalty, params.max_tokens) == (
        0.7, 0.8, 20, 1.05, 500)
    assert params.stop == ("<|im_end|>", "<|endoftext|>")


def test_greedy_preset_is_deterministic_and_every_field_overridable():
    greedy = GenerationParams.preset("greedy", max_tokens=64, seed=3)
    assert greedy.greedy and greedy.max_tokens == 64 and greedy.seed == 3
    assert GenerationParams.preset("paper", temperature=None).temperature == 0.7  # None keeps the preset


def test_invalid_values_and_unknown_names_are_clear_errors():
    with pytest.raises(InputError, match="top_p"):
        GenerationParams(top_p=0)
    with pytest.raises(InputError, match="unknown sampling preset"):
        GenerationParams.preset("hot")
    with pytest.raises(InputError, match="unknown generation parameters"):
        GenerationParams().replace(temprature=1.0)


def test_key_is_canonical():
    assert GenerationParams().key() == GenerationParams(stop=["<|im_end|>", "<|endoftext|>"]).key()
    assert GenerationParams().key() != GenerationParams(seed=1).key()


def test_combine_modes():
    assert combine("q", "r") == "r"
    assert combine("q", "r", "concat", repeat=3) == "q q q r"
    assert combine("q", "r", "both") == ("q", "r")
    with pytest.raises(InputError):
        combine("q", "r", "sum")
