"""BRIGHT's query-side BM25 ("BM25Q") weights, once, for every engine that computes them.

BRIGHT and TongSearch-QR score with gensim's ``LuceneBM25Model(k1=0.9, b=0.4)`` applied to the
documents *and to the query*:

    w(t, x) = idf(t) * tf / (tf + k1 * (1 - b + b * len(x) / avgdl)),  idf(t) = ln(N + 1) - ln(df + 0.5)

``len(x)`` counts only the terms the index knows (gensim's ``doc2bow`` drops the others first).
The embedded engine (``search.bm25``), the Elasticsearch/OpenSearch stages (from ``_termvectors``
statistics, ``adapters.querydsl``) and the Pyserini adapter (from the Lucene index) weight a query
with these two functions. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TypeVar

K1, B = 0.9, 0.4  # BRIGHT/TongSearch's BM25 parameters

Term = TypeVar("Term")


def idf(documents: int, df: int | float) -> float:
    """ln(N + 1) - ln(df + 0.5), with the C library's log as gensim computes it."""
    return math.log(documents + 1.0) - math.log(df + 0.5)


def term_weights(counts: Mapping[Term, int], idf_of: Callable[[Term], float], avgdl: float,
                 k1: float = K1, b: float = B) -> dict[Term, float]:
    """Each term's weight in one text (a query or a document) of ``counts`` known terms."""
    length = sum(counts.values())
    norm = k1 * (1.0 - b + b * length / avgdl)
    return {term: idf_of(term) * (count / (count + norm)) for term, count in counts.items()}
