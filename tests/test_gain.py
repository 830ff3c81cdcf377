"""The paper's embedding reward (shared by `tsqr eval --rewrite-gain` and training), by hand."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy", reason="the rewrite gain needs the 'eval' extra")
from tsqr_plugins.errors import InputError  # noqa: E402
from tsqr_plugins.gain import INVALID_REWRITE_SCORE, embedding_gain  # noqa: E402

VECTORS = {  # unit vectors, so cosines are dot products
    "query": [1.0, 0.0],
    "rewrite": [0.6, 0.8],
    "doc a": [0.0, 1.0],
    "doc b": [0.6, 0.8],
}


def encode(texts):
    encode.calls.append(list(texts))
    return np.array([VECTORS[t] for t in texts])


encode.calls = []


def test_hand_computed_gain_and_single_encoding():
    encode.calls.clear()
    gains = embedding_gain(["query", "query"], ["rewrite", "query"], [["doc a", "doc b"], ["doc a"]], encode)
    # doc a: 0.8 - 0.0; doc b: 1.0 - 0.6 -> mean 0.6 -> x10
    assert gains[0] == pytest.approx(6.0)
    assert gains[1] == 0.0  # a rewrite equal to the query gains nothing
    assert len(encode.calls) == 1 and sorted(encode.calls[0]) == ["doc a", "doc b", "query", "rewrite"]


def test_invalid_rewrites_and_bad_input():
    assert embedding_gain(["query"], [""], [["doc a"]], encode) == [INVALID_REWRITE_SCORE]
    assert embedding_gain(["query"], [None], [["doc a"]], encode) == [INVALID_REWRITE_SCORE]
    with pytest.raises(InputError, match="needs positive documents"):
        embedding_gain(["query"], ["rewrite"], [[]], encode)
    with pytest.raises(InputError, match="1 queries, 2 rewrites"):
        embedding_gain(["query"], ["rewrite", "x"], [["doc a"]], encode)
