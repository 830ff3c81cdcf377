"""`elasticsearch[:<url>]` / `opensearch[:<url>]`: evaluation on a live cluster with BM25Q.

Each corpus is bulk-indexed once (the shipped template's settings: BM25 k1=0.9 b=0.4, the
Lucene-English analyzer, one shard) into ``tsqr-eval-<corpus hash>`` and reused while it holds
every document. Each query becomes the client stage's BM25Q body: ``_termvectors`` analyses it with
the index's analyzer and gives document frequencies, and the boosted ``term`` clauses are searched.
The URL is the argument or ``$TSQR_ES_URL`` / ``$TSQR_OPENSEARCH_URL``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from .. import querydsl
from ..errors import InputError
from . import Retriever, pad_with_zero_scores, top_k_excluding
from .bm25 import Hit, corpus_key
from .bulk import BulkIndexer

FIELD = "text"


class _EngineBM25(Retriever):
    URL_VARIABLE = ""

    def __init__(self, argument: str | None = None, cache_dir: Path | None = None, progress: bool = False):
        url = argument or os.environ.get(self.URL_VARIABLE)
        if not url:
            raise InputError(f"the {self.NAME} retriever needs a URL: --retriever {self.NAME}:http://host:9200 "
                             f"or ${self.URL_VARIABLE}")
        self.progress = progress
        self.indexer = BulkIndexer(url)
        self.index_name: str | None = None

    def index(self, doc_ids: Sequence[str], texts: Sequence[str], task: str | None = None,
              prebuilt: str | None = None) -> None:
        name = f"tsqr-eval-{corpus_key(doc_ids, texts, {'field': FIELD, 'k1': querydsl.BM25_K1, 'b': querydsl.BM25_B})[:16]}"
        count = self.indexer.request("GET", f"/{name}/_count")
        if not (count.status_code == 200 and count.json().get("count") == len(set(doc_ids))):
            self.indexer.create_index(name, FIELD, recreate=True)
            self.indexer.index(name, doc_ids, texts, FIELD, progress=self.progress)
        self.index_name = name
        self._doc_ids = list(doc_ids)

    def _query(self, text: str) -> dict:
        answer = self.indexer.request("POST", f"/{self.index_name}/_termvectors",
                                      json=querydsl.termvectors_body(text, [FIELD]))
        if answer.status_code >= 400:
            raise InputError(f"_termvectors failed on {self.index_name} ({answer.status_code}): {answer.text[:300]}")
        try:
            weights = querydsl.bm25q_weights(answer.json(), FIELD)
        except ValueError as error:  # not JSON, or querydsl.MalformedTermVectors
            raise InputError(f"_termvectors on {self.index_name} gave no statistics ({error}): {answer.text[:300]}") from None
        return querydsl.bm25q_query(weights, FIELD, querydsl.DEFAULT_CLAUSE_BUDGET).query

    def search_batch(self, queries: Sequence[str], k: int,
                     excluded: Sequence[Iterable[str]] | None = None) -> list[list[Hit]]:
        if self.index_name is None:
            raise InputError("index a corpus before searching")
        results = []
        for i, text in enumerate(queries):
            skip = set(excluded[i]) if excluded else set()
            body = {"query": self._query(querydsl.clean_text(text)), "size": k + len(skip), "_source": False}
            answer = self.indexer.request("POST", f"/{self.index_name}/_search", json=body)
            if answer.status_code >= 400:
                raise InputError(f"_search failed on {self.index_name} ({answer.status_code}): {answer.text[:300]}")
            hits = (Hit(h["_id"], float(h["_score"] or 0.0)) for h in answer.json()["hits"]["hits"])
            results.append(pad_with_zero_scores(top_k_excluding(hits, k, skip), k, self._doc_ids, skip))
        return results


class ElasticsearchBM25(_EngineBM25):
    NAME = "elasticsearch"
    URL_VARIABLE = "TSQR_ES_URL"


class OpenSearchBM25(_EngineBM25):
    NAME = "opensearch"
    URL_VARIABLE = "TSQR_OPENSEARCH_URL"
