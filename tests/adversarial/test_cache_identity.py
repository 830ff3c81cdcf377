"""New weights saved at the same model path are never answered from the old weights' cache."""

from __future__ import annotations

import shutil

import pytest

from tsqr_plugins import Rewriter
from tsqr_plugins.errors import CacheMismatchError


def retrain(folder) -> None:
    """Other weights in the same folder, as `tsqr train --overwrite` leaves them."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    model.save_pretrained(str(folder))


def test_new_weights_at_the_same_path_miss_the_old_cache(tmp_path, tiny_model):
    pytest.importorskip("transformers", reason="needs the 'transformers' extra")
    from tsqr_plugins.backends import with_cache
    from tsqr_plugins.backends.transformers import TransformersBackend

    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_model, folder)

    def rewrite(cache=None):
        backend = with_cache(TransformersBackend(str(folder), device="cpu"), cache)
        try:
            return Rewriter(backend, params="greedy").rewrite("why do moths circle lamps")
        finally:
            backend.close()

    first, again = rewrite(), rewrite()
    assert not first.cached and again.cached  # the default cache answers the same weights
    explicit = tmp_path / "explicit.sqlite"
    rewrite(explicit)
    retrain(folder)
    assert not rewrite().cached  # before: answered from the old weights' cache
    with pytest.raises(CacheMismatchError, match="weights"):
        rewrite(explicit)  # a named cache file says whose rewrites it holds


def test_weights_fingerprint_follows_the_files(tmp_path):
    from tsqr_plugins.models import weights_fingerprint

    (tmp_path / "model.safetensors").write_bytes(b"a" * 10)
    (tmp_path / "config.json").write_text("{}")
    before = weights_fingerprint(str(tmp_path))
    assert before.startswith("files:") and weights_fingerprint(str(tmp_path)) == before
    (tmp_path / "model.safetensors").write_bytes(b"b" * 11)
    assert weights_fingerprint(str(tmp_path)) != before
    assert weights_fingerprint("owner/not-in-any-cache") == ""
