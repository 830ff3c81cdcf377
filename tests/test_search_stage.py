"""The Elasticsearch/OpenSearch query-transform stage: pure query building, and the Python client
stages with the real `elasticsearch` and `opensearch-py` clients talking to a recording HTTP server
(tests/search_server.py — not a search engine; live-server tests are in test_search_live.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import skip_unless
from tests.search_server import RecordingSearchServer
from tsqr_plugins import Rewriter
from tsqr_plugins import querydsl
from tsqr_plugins.adapters import stage
from tsqr_plugins.adapters.stage import StageSettings
from tsqr_plugins.core import Rewrite
from tsqr_plugins.errors import BackendError, InputError
from tsqr_plugins.lazy import is_installed
from tsqr_plugins.analyzer import tokenize
from tsqr_plugins.testing.conformance import CORPUS, QUERY, REWRITE, FailingBackend, file_rewriter, slow_rewriter


def rewrite(original: str, text: str, fallback: bool = False) -> Rewrite:
    return Rewrite(original=original, text=text, fallback=fallback, reason="test" if fallback else None)


def run_stage(query: dict, rewrites: dict[str, str], settings: StageSettings, server=None):
    new, info = run_search_stage({"query": query}, rewrites, settings, server)
    return new["query"], info


def run_search_stage(search: dict, rewrites: dict[str, str], settings: StageSettings, server=None):
    plan = stage.plan(search, settings)
    plan.rewrites = [rewrite(t, rewrites[t]) if t in rewrites else rewrite(t, t, True) for t in plan.texts]
    stats = {key: server.termvectors(querydsl.termvectors_body(key[0], list(key[1])))
             for key in stage.stats_needed(plan, settings)} if server else {}
    return stage.apply(plan, settings, stats)


# -- finding the text queries ------------------------------------------------------------------


def test_finds_text_queries_in_compound_queries_only():
    query = {"bool": {
        "must": [{"match": {"text": "moths"}}, {"term": {"match": {"value": "not a match query"}}}],
        "should": {"dis_max": {"queries": [{"multi_match": {"query": "lamps", "fields": ["title^2", "text"]}}]}},
        "filter": [{"function_score": {"query": {"match": {"title": {"query": "street", "boost": 2}}}}}],
    }}
    found = querydsl.find_text_queries({"query": query}, include_filters=True)
    assert [(leaf.kind, leaf.text, leaf.fields) for leaf in found] == [
        ("match", "moths", ["text"]), ("multi_match", "lamps", ["title^2", "text"]), ("match", "street", ["title"])]
    assert found[2].boost == 2
    only_text = querydsl.find_text_queries({"query": query}, fields=["text"])
    assert [leaf.text for leaf in only_text] == ["moths", "lamps"]  # multi_match names text


def test_filter_contexts_are_left_alone_by_default():
    """A long rewrite under must_not/filter/negative would exclude far more documents."""
    query = {"bool": {
        "must": [{"match": {"text": "moths"}}],
        "must_not": [{"match": {"text": "caterpillars"}}],
        "filter": [{"match": {"text": "insects"}}],
        "should": [{"boosting": {"positive": {"match": {"text": "lamps"}}, "negative": {"match": {"text": "LED"}},
                                 "negative_boost": 0.5}},
                   {"constant_score": {"filter": {"match": {"text": "night"}}}}],
    }}
    assert [leaf.text for leaf in querydsl.find_text_queries({"query": query})] == ["moths", "lamps"]
    everything = querydsl.find_text_queries({"query": query}, include_filters=True)
    assert sorted(leaf.text for leaf in everything) == sorted(["moths", "caterpillars", "insects", "lamps", "LED", "night"])
    new, info = run_stage(query, {"moths": REWRITE, "caterpillars": REWRITE}, StageSettings())
    assert new["bool"]["must_not"] == query["bool"]["must_not"] and info["rewritten"] == 1


def test_bm25q_without_concrete_fields_falls_back_to_match_and_says_why():
    server = RecordingSearchServer(CORPUS)
    for fields, reason in (([], "no field names"), (["te*"], "wildcard")):
        spec = {"query": QUERY, **({"fields": fields} if fields else {})}
        new, info = run_stage({"multi_match": spec}, {QUERY: REWRITE}, StageSettings(scoring="bm25q"), server)
        assert new == {"multi_match": {**({"fields": fields} if fields else {}), "query": REWRITE}}
        assert reason in info["queries"][0]["stats_unavailable"]
    with pytest.raises(InputError, match="JSON object"):
        querydsl.find_text_queries({"query": "moths"})


def test_the_callers_query_is_never_modified():
    query = {"bool": {"must": [{"match": {"text": QUERY}}]}}
    before = json.dumps(query)
    new, info = run_stage(query, {QUERY: REWRITE}, StageSettings())
    assert json.dumps(query) == before
    assert new == {"bool": {"must": [{"match": {"text": {"query": REWRITE}}}]}}
    assert info["rewritten"] == 1 and info["queries"][0]["rewrite"] == REWRITE


# -- building ------------------------------------------------------------------------------------


def test_modes_replace_concat_and_fusion():
    query = {"match": {"text": {"query": QUERY, "fuzziness": "AUTO", "operator": "and", "boost": 3}}}
    replaced, _ = run_stage(query, {QUERY: REWRITE}, StageSettings())
    # fuzziness and operator are dropped (a 500-token rewrite with operator=and matches nothing); boost kept
    assert replaced == {"bool": {"should": [{"match": {"text": {"query": REWRITE}}}], "boost": 3}}
    concat, _ = run_stage(query, {QUERY: REWRITE}, StageSettings(mode="concat", repeat=2))
    assert concat["bool"]["should"][0]["match"]["text"]["query"] == f"{QUERY} {QUERY} {REWRITE}"
    both, _ = run_stage({"match": {"text": QUERY}}, {QUERY: REWRITE},
                        StageSettings(mode="both", original_boost=2.0, rewrite_boost=1.0))
    assert both == {"bool": {"should": [
        {"bool": {"should": [{"match": {"text": {"query": QUERY}}}], "boost": 2.0}},
        {"match": {"text": {"query": REWRITE}}},
    ]}}


def test_a_fallen_back_rewrite_leaves_the_query_as_the_caller_wrote_it():
    query = {"bool": {"must": [{"match": {"text": {"query": "street lamps", "fuzziness": "AUTO"}}},
                               {"match": {"text": QUERY}}]}}
    new, info = run_stage(query, {QUERY: REWRITE}, StageSettings())
    assert new["bool"]["must"][0] == query["bool"]["must"][0]
    assert new["bool"]["must"][1] == {"match": {"text": {"query": REWRITE}}}
    assert (info["rewritten"], info["fallback"]) == (1, 1)


def test_bm25q_weights_from_termvectors_equal_brights_formula():
    from tsqr_plugins.search.bm25 import BM25Index

    server = RecordingSearchServer(CORPUS)
    embedded = BM25Index.build(list(CORPUS), list(CORPUS.values()))
    for text in (QUERY, REWRITE, "lamps lamps night unknownword"):
        answer = server.termvectors(querydsl.termvectors_body(text, ["text"]))
        ids, weights = embedded.query_vector(text)
        by_id = dict(zip(ids, weights))
        expected = {term: by_id[i] for term, i in embedded.vocabulary.items() if i in by_id}
        assert querydsl.bm25q_weights(answer, "text") == pytest.approx(expected, rel=1e-6)

    new, info = run_stage({"match": {"text": QUERY}}, {QUERY: REWRITE}, StageSettings(scoring="bm25q"), server)
    clauses = new["bool"]["should"]
    assert {c["term"]["text"]["value"] for c in clauses} == {"insect", "us", "transvers", "orient", "dorsal", "light",
                                                             "respons", "moon"}
    assert [c["term"]["text"]["boost"] for c in clauses] == sorted((c["term"]["text"]["boost"] for c in clauses),
                                                                  reverse=True)
    assert info["queries"][0]["scoring"] == "bm25q" and info["queries"][0]["dropped_terms"] == 0


def test_bm25q_clause_cap_drops_the_lowest_weights_and_says_so():
    corpus = {f"d{i}": f"term{i} " * (1 + i % 3) + "common" for i in range(3000)}
    server = RecordingSearchServer(corpus)
    text = " ".join(f"term{i}" for i in range(3000)) + " common common"
    answer = server.termvectors(querydsl.termvectors_body(text, ["text"]))
    weights = querydsl.bm25q_weights(answer, "text")
    built = querydsl.bm25q_query(weights, "text", budget=1000)
    assert querydsl.count_clauses(built.query) == 1000
    assert built.info == {"scoring": "bm25q", "terms": 1000, "dropped_terms": 2001}
    kept = {c["term"]["text"]["value"] for c in built.query["bool"]["should"]}
    assert min(weights[t] for t in kept) >= max(w for t, w in weights.items() if t not in kept)
    assert querydsl.bm25q_query({}, "text", 10).query == {"match_none": {}}  # an empty bool would match all


def test_match_is_capped_by_lucene_tokens():
    text = "lamp " * 10_000
    built = querydsl.match_query(text, ["text"], budget=900)
    assert len(built.query["match"]["text"]["query"].split()) == 900
    assert built.info["dropped_tokens"] == 9100


HOSTILE = [
    'title:(moth OR lamp) AND NOT body:* OR _exists_:secret~2 "phrase"^10 /re.*gex/ [a TO z]',
    '"}}, {"script": {"source": "System.exit(0)"}}, {"match_all": {',
    '{"query_string": {"query": "*"}}',
    "\\u0000 \x00 \ud83e\udd8b \ud800 蛾 灯 " + "x" * 300,  # a pair split in two, a lone surrogate
    " ".join(f"tok{i}" for i in range(10_000)),
]


@pytest.mark.parametrize("scoring", ["match", "bm25q"])
@pytest.mark.parametrize("mode", ["replace", "concat", "both"])
def test_model_output_stays_a_value_and_the_body_stays_bounded(scoring, mode):
    corpus = {"d1": HOSTILE[4], "d2": "moth lamp title secret phrase regex script system exit query"}
    server = RecordingSearchServer(corpus)
    settings = StageSettings(fields=("text",), scoring=scoring, mode=mode, clause_budget=1000)
    for output in HOSTILE:
        query = {"bool": {"must": [{"match": {"text": "moths"}}], "filter": [{"term": {"lang": "en"}}]}}
        new, info = run_stage(query, {"moths": output}, settings, server)
        encoded = json.dumps({"query": new, "tsqr": info})
        assert json.loads(encoded)["query"] == new  # well formed
        keys = {key for value in querydsl.walk_values(new) if isinstance(value, dict) for key in value}
        assert not keys & {"query_string", "simple_query_string", "script", "script_score", "wrapper"}
        fields = {name for value in querydsl.walk_values(new) if isinstance(value, dict)
                  for kind in ("match", "term") if isinstance(value.get(kind), dict) for name in value[kind]}
        assert fields <= {"text", "lang"}  # model output never becomes a field name
        assert querydsl.count_clauses(new) <= 1000 + 1  # the caller's own term filter
        for value in querydsl.walk_values(new):
            if isinstance(value, str) and len(value) > 20:
                clean = querydsl.clean_text(output)  # the output itself, or its first Lucene tokens
                assert value == clean or value in " ".join(tokenize(clean)) or "moths" in value


def test_settings_are_checked():
    with pytest.raises(InputError, match="scoring must be one of"):
        StageSettings(scoring="tfidf")
    with pytest.raises(InputError, match="combine mode"):
        StageSettings(mode="fuse")
    with pytest.raises(InputError, match="clause_budget"):
        StageSettings(clause_budget=0)


# -- the Python client stages over HTTP ----------------------------------------------------------


def search_of(server) -> dict:
    (request,) = server.searches()
    return request["body"]["query"]


@pytest.fixture
def es_client():
    skip_unless(is_installed("elasticsearch"), "the elasticsearch client is not installed (the 'elasticsearch' extra)")

    def make(server):
        from elasticsearch import Elasticsearch

        return Elasticsearch(server.url, request_timeout=10)
    return make


def test_elasticsearch_client_stage(es_client, tmp_path):
    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

    with RecordingSearchServer(CORPUS) as server:
        es = RewritingElasticsearch(es_client(server), file_rewriter(tmp_path), fields=["text"])
        response = es.search(index="docs", query={"match": {"text": QUERY}}, size=5)
        assert search_of(server) == {"match": {"text": {"query": REWRITE}}}
        assert server.searches()[0]["body"]["size"] == 5  # the rest of the request untouched
        assert response["tsqr"]["queries"][0]["rewrite"] == REWRITE
        assert es.last_rewrites[0].original == QUERY

        server.requests.clear()
        bm25q = RewritingElasticsearch(es_client(server), file_rewriter(tmp_path), scoring="bm25q")
        bm25q.search(index="docs", body={"query": {"match": {"text": QUERY}}})  # body= style too
        assert [r["path"].split("?")[0] for r in server.requests] == ["/docs/_termvectors", "/docs/_search"]
        assert "term" in search_of(server)["bool"]["should"][0]

        server.requests.clear()
        bm25q.search(index="docs-*", query={"match": {"text": QUERY}})  # a pattern: no single _termvectors
        assert search_of(server) == {"match": {"text": {"query": REWRITE}}}
        assert es.info()["tagline"]  # every other method passes through

    with pytest.raises(InputError, match="elasticsearch.Elasticsearch"):
        RewritingElasticsearch(object(), file_rewriter(tmp_path))


def test_msearch_rewrites_the_whole_batch_in_one_call(es_client, tmp_path):
    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch
    from tsqr_plugins.backends.file import FileBackend

    calls = []

    class CountingBackend(FileBackend):
        def generate(self, queries, prompt, params):
            calls.append(list(queries))
            return super().generate(queries, prompt, params)

    path = tmp_path / "rewrites.json"
    path.write_text(json.dumps({QUERY: REWRITE, "lamp posts": "street lighting columns"}))
    with RecordingSearchServer(CORPUS) as server:
        es = RewritingElasticsearch(es_client(server), Rewriter(CountingBackend(path, on_missing="fallback")),
                                    scoring="bm25q")
        searches = [{"index": "docs"}, {"query": {"match": {"text": QUERY}}, "size": 2},
                    {"index": "docs"}, {"query": {"term": {"id": "d1"}}},  # nothing to rewrite: as sent
                    {"index": "docs"}, {"query": {"match": {"text": "lamp posts"}}}]
        response = es.msearch(searches=searches)
        assert calls == [[QUERY, "lamp posts"]]  # one rewriter call for the batch
        (sent,) = [r for r in server.requests if r["path"].split("?")[0].endswith("/_msearch")]
        lines = sent["ndjson"]
        assert lines[0] == {"index": "docs"} and lines[1]["size"] == 2
        assert "term" in lines[1]["query"]["bool"]["should"][0]  # BM25Q from _termvectors
        assert lines[3] == {"query": {"term": {"id": "d1"}}}
        assert [info["rewritten"] for info in response["tsqr"]] == [1, 0, 1]
        assert len(response["responses"]) == 3


def test_elasticsearch_client_stage_fails_open(es_client, tmp_path):
    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

    query = {"match": {"text": {"query": QUERY, "fuzziness": "AUTO"}}}
    with RecordingSearchServer(CORPUS, fail_termvectors=True) as server:
        failing = RewritingElasticsearch(es_client(server), Rewriter(FailingBackend()))
        response = failing.search(index="docs", query=query)
        assert search_of(server) == query and response["tsqr"]["fallback"] == 1

        server.requests.clear()
        strict = RewritingElasticsearch(es_client(server), Rewriter(FailingBackend(), strict=True))
        with pytest.raises(BackendError, match="unreachable"):
            strict.search(index="docs", query=query)
        assert server.searches() == []  # strict: nothing sent

        server.requests.clear()
        no_stats = RewritingElasticsearch(es_client(server), file_rewriter(tmp_path), scoring="bm25q")
        response = no_stats.search(index="docs", query=query)  # _termvectors answers 500
        assert search_of(server) == {"match": {"text": {"query": REWRITE}}}
        assert "_termvectors failed" in response["tsqr"]["queries"][0]["stats_unavailable"]


def test_async_elasticsearch_client_stage(tmp_path):
    skip_unless(is_installed("elasticsearch") and is_installed("aiohttp"),
                "elasticsearch[async] is not installed")
    from elasticsearch import AsyncElasticsearch

    from tsqr_plugins.adapters.elasticsearch import AsyncRewritingElasticsearch

    async def main(server):
        client = AsyncRewritingElasticsearch(AsyncElasticsearch(server.url), file_rewriter(tmp_path), scoring="bm25q")
        try:
            return await client.search(index="docs", query={"match": {"text": QUERY}})
        finally:
            await client.close()

    with RecordingSearchServer(CORPUS) as server:
        response = asyncio.run(main(server))
        assert response["tsqr"]["queries"][0]["scoring"] == "bm25q"
        assert {c["term"]["text"]["value"] for c in search_of(server)["bool"]["should"]} >= {"dorsal", "moon"}


def test_opensearch_client_stage_sync_and_async(tmp_path):
    skip_unless(is_installed("opensearchpy"), "opensearch-py is not installed (the 'opensearch' extra)")
    from opensearchpy import AsyncOpenSearch, OpenSearch

    from tsqr_plugins.adapters.opensearch import AsyncRewritingOpenSearch, RewritingOpenSearch

    with RecordingSearchServer(CORPUS) as server:
        client = RewritingOpenSearch(OpenSearch([server.url]), file_rewriter(tmp_path), mode="both")
        response = client.search(index="docs", body={"query": {"match": {"text": QUERY}}, "size": 3})
        assert search_of(server) == {"bool": {"should": [
            {"match": {"text": {"query": QUERY}}}, {"match": {"text": {"query": REWRITE}}}]}}
        assert response["tsqr"]["rewritten"] == 1

        async def main():
            wrapped = AsyncRewritingOpenSearch(AsyncOpenSearch([server.url]), Rewriter(FailingBackend()))
            try:
                return await wrapped.search(index="docs", body={"query": {"match": {"text": QUERY}}})
            finally:
                await wrapped.close()

        server.requests.clear()
        if is_installed("aiohttp"):
            assert asyncio.run(main())["tsqr"]["fallback"] == 1
            assert search_of(server) == {"match": {"text": QUERY}}
    with pytest.raises(InputError, match="opensearchpy.OpenSearch"):
        RewritingOpenSearch(object(), None)


def test_a_malformed_termvectors_answer_falls_back_to_match_and_says_so():
    """Not match_none with rewritten=1 (silently empty results): the rewrite goes out with match
    scoring and the metadata names the reason."""
    class Garbled(RecordingSearchServer):
        def termvectors(self, body):
            return {"term_vectors": {"text": {"terms": {"moon": {"tf": 1}}}}}  # no statistics

    new, info = run_stage({"match": {"text": QUERY}}, {QUERY: REWRITE}, StageSettings(scoring="bm25q"), Garbled(CORPUS))
    assert new == {"match": {"text": {"query": REWRITE}}}
    assert "malformed _termvectors" in info["queries"][0]["stats_unavailable"]
    assert querydsl.bm25q_weights({"found": True, "term_vectors": {}}, "text") == {}  # only stop words: no terms


def test_field_patterns_count_as_several_fields_in_the_clause_budget():
    """A pattern (or a multi_match without fields) queries every field it matches with every token."""
    from tsqr_plugins import querydsl

    text = " ".join(f"t{i}" for i in range(2000))
    exact = querydsl.match_query(text, ["a", "b"], 1000, kind="multi_match")
    pattern = querydsl.match_query(text, ["a", "title_*"], 1000, {"fields": ["a", "title_*"]}, kind="multi_match")
    unnamed = querydsl.match_query(text, [], 1000, {}, kind="multi_match")
    kept = lambda built: len(next(iter(built.query.values()))["query"].split())  # noqa: E731
    assert kept(exact) == 500 and "fields_guessed" not in exact.info
    assert kept(pattern) == 1000 // (1 + querydsl.FIELDS_PER_PATTERN) and pattern.info["fields_guessed"]
    assert kept(unnamed) == 1000 // querydsl.FIELDS_PER_PATTERN
    assert querydsl.passed_clause_limit('{"type":"too_many_nested_clauses","reason":"maxClauseCount is set to 1024"}')
    assert not querydsl.passed_clause_limit('{"type":"parsing_exception"}')


# -- query shapes beyond query DSL leaves --------------------------------------------------------


def test_retrievers_hybrid_and_combined_fields_are_rewritten_and_the_rest_is_named():
    """Elasticsearch retrievers (elasticsearch-specification _types/Retriever.ts): a standard
    retriever's query, the children of rrf (plain or with a weight) and linear, the multi-field text
    of rrf/linear, the child of a reranker; OpenSearch's hybrid sub-queries; combined_fields. What
    is left as written (query syntax, phrases, vectors, a reranker's inference_text, filters) is
    named with its reason, never skipped silently."""
    search = {
        "retriever": {"rrf": {"retrievers": [
            {"standard": {"query": {"match": {"text": "a"}}, "filter": {"match": {"text": "f"}}}},
            {"retriever": {"linear": {"retrievers": [
                {"retriever": {"standard": {"query": {"combined_fields": {"query": "b", "fields": ["text", "title"],
                                                                          "operator": "and"}}}}, "weight": 2},
                {"retriever": {"knn": {"field": "v", "query_vector": [1.0], "k": 3}}, "weight": 1}]}},
             "weight": 0.5},
            {"text_similarity_reranker": {"inference_text": "c", "field": "text",
                                          "retriever": {"standard": {"query": {"query_string": {"query": "d"}}}}}},
            {"linear": {"query": "e", "fields": ["text"], "normalizer": "minmax"}},
        ]}},
        "query": {"hybrid": {"queries": [{"match": {"text": "g"}}, {"match_phrase": {"text": "h"}}],
                             "filter": {"match": {"text": "i"}}}},
    }
    rewrites = {t: f"rewritten {t}" for t in "abcdefghi"}
    new, info = run_search_stage(search, rewrites, StageSettings())
    assert [entry["original"] for entry in info["queries"]] == ["g", "a", "b", "e"]
    rrf = new["retriever"]["rrf"]["retrievers"]
    assert rrf[0]["standard"]["query"] == {"match": {"text": {"query": "rewritten a"}}}
    assert rrf[0]["standard"]["filter"] == {"match": {"text": "f"}}  # a retriever's filter is a filter
    linear = rrf[1]["retriever"]["linear"]["retrievers"]
    assert linear[0] == {"retriever": {"standard": {"query": {"combined_fields": {
        "fields": ["text", "title"], "query": "rewritten b"}}}}, "weight": 2}  # operator dropped, weight kept
    assert rrf[3]["linear"] == {"query": "rewritten e", "fields": ["text"], "normalizer": "minmax"}
    assert new["query"]["hybrid"]["queries"][0] == {"match": {"text": {"query": "rewritten g"}}}
    assert new["query"]["hybrid"]["filter"] == {"match": {"text": "i"}}
    named = {entry.get("query") or entry.get("retriever") for entry in info["not_rewritten"]}
    assert named == {"match_phrase", "query_string", "knn", "text_similarity_reranker"}
    assert all(entry["reason"] for entry in info["not_rewritten"])
    assert search["retriever"]["rrf"]["retrievers"][0]["standard"]["query"] == {"match": {"text": "a"}}  # a copy

    both, _ = run_search_stage({"retriever": {"rrf": {"query": "e", "retrievers": []}}}, rewrites,
                               StageSettings(mode="both"))
    assert both["retriever"]["rrf"]["query"] == "e rewritten e"  # one text: original and rewrite side by side


def test_what_a_second_review_found_in_the_stage():
    """A retriever list of the wrong shape is left to the engine (the proxy answered 502); concat
    keeps part of the rewrite under the budget (capping the joined text kept the repeated original
    alone); a boost written as a string ("2", which the engines read) is kept."""
    for retrievers in (5, True, 1.5, "x", {"a": 1}):
        plan = stage.plan({"retriever": {"rrf": {"retrievers": retrievers}}}, StageSettings())
        assert plan.leaves == []
    original = " ".join(f"o{i}" for i in range(250))
    new, info = run_stage({"match": {"text": original}}, {original: "transverse orientation of moths"},
                          StageSettings(mode="concat", repeat=5, clause_budget=1000))
    text = new["match"]["text"]["query"]
    assert text.endswith("transverse orientation of moths") and len(tokenize(text)) <= 1000
    new, _ = run_stage({"match": {"text": {"query": QUERY, "boost": "2"}}}, {QUERY: REWRITE}, StageSettings())
    assert new == {"bool": {"should": [{"match": {"text": {"query": REWRITE}}}], "boost": 2.0}}


# -- fusion (fusion="rrf") and anytime rewriting (budget) ----------------------------------------


class RankingServer(RecordingSearchServer):
    """Ranks the corpus for each search by shared analyzed terms (a stand-in for BM25: the tests
    check what is sent and how the two answers are fused, with lists that differ)."""

    def search_answer(self, body):
        body = body or {}
        texts = [v for v in querydsl.walk_values(body.get("query", {})) if isinstance(v, str)]
        words = set(self.analyzer(" ".join(texts)))
        scored = sorted(((sum(c for term, c in doc.items() if term in words), doc_id)
                         for doc_id, doc in self.documents.items()), key=lambda item: (-item[0], item[1]))
        matched = [(score, doc_id) for score, doc_id in scored if score > 0]
        start, size = body.get("from", 0), body.get("size", 10)
        hits = [{"_index": "docs", "_id": doc_id, "_score": float(score), "_source": {"text": CORPUS[doc_id]}}
                for score, doc_id in matched[start:start + size]]
        answer = {"took": 2, "timed_out": False, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                  "hits": {"total": {"value": len(matched), "relation": "eq"},
                           "max_score": float(matched[0][0]) if matched else None, "hits": hits}}
        if "aggs" in body:
            answer["aggregations"] = {"matched": {"value": len(matched)}}
        return answer


def expected_fusion(server, first: dict, second: dict, weights=(1.0, 1.0), k=60):
    """fusion.rrf of the two lists the server gives for the two bodies (the engine's order as the ranking)."""
    from tsqr_plugins import fusion

    runs = []
    for body in (first, second):
        hits = server.search_answer(body)["hits"]["hits"]
        runs.append({hit["_id"]: len(hits) - rank for rank, hit in enumerate(hits)})
    scores = fusion.rrf(runs, k, list(weights), first["size"])
    return [(doc_id, scores[doc_id]) for doc_id in fusion.ranked(scores)]


def requests_to(server, endpoint: str) -> list[dict]:
    return [r for r in server.requests if r["path"].split("?")[0].endswith(endpoint)]


def test_rrf_sends_one_msearch_and_answers_the_fusion_of_both_lists(es_client, tmp_path):
    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

    with RankingServer(CORPUS) as server:
        es = RewritingElasticsearch(es_client(server), file_rewriter(tmp_path), fusion="rrf", rewrite_weight=2.0)
        aggs = {"matched": {"value_count": {"field": "_id"}}}
        response = es.search(index="docs", query={"match": {"text": QUERY}}, from_=1, size=2, aggs=aggs)
        assert requests_to(server, "/_search") == []
        (sent,) = requests_to(server, "/_msearch")  # one request, two items
        header, first, header2, second = sent["ndjson"]
        assert header == header2 == {"index": "docs"}
        assert first == {"query": {"match": {"text": QUERY}}, "from": 0, "size": 3, "aggs": aggs}
        assert second == {"query": {"match": {"text": {"query": REWRITE}}}, "from": 0, "size": 3}  # no aggs
        fused = expected_fusion(server, first, second, weights=(1.0, 2.0))[1:3]
        assert [(h["_id"], h["_score"]) for h in response["hits"]["hits"]] == fused
        original = server.search_answer(first)
        assert response["hits"]["total"] == original["hits"]["total"]  # the original query's total
        assert response["aggregations"] == original["aggregations"]
        assert response["hits"]["max_score"] == expected_fusion(server, first, second, (1.0, 2.0))[0][1]
        info = response["tsqr"]
        assert info["fused"] is True and info["rewritten"] == 1
        assert info["fusion"]["weights"] == [1.0, 2.0] and info["fusion"]["depth"] == 3
        in_original = {h["_id"] for h in original["hits"]["hits"]}
        assert info["fusion"]["hits"]["original"] == sum(h["_id"] in in_original for h in response["hits"]["hits"])
        assert es.last_rewrites[0].text == REWRITE


@pytest.mark.parametrize("request_options, reason", [
    ({"sort": [{"date": "desc"}]}, "sorted by other than _score"),
    ({"search_after": [1]}, "search_after"),
    ({"collapse": {"field": "group"}}, "collapse"),
    ({"size": 0}, "size 0"),
    ({"explain": True}, "explain"),
])
def test_rrf_leaves_what_it_cannot_fuse_to_the_plain_rewritten_search(es_client, tmp_path, request_options, reason):
    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

    with RankingServer(CORPUS) as server:
        es = RewritingElasticsearch(es_client(server), file_rewriter(tmp_path), fusion="rrf")
        response = es.search(index="docs", query={"match": {"text": QUERY}}, **request_options)
        assert requests_to(server, "/_msearch") == []
        assert search_of(server) == {"match": {"text": {"query": REWRITE}}}  # as mode="replace"
        assert response["tsqr"]["fused"] is False and reason in response["tsqr"]["fusion"]["reason"]


def test_rrf_on_a_failed_rewrite_is_one_plain_search_with_the_original(es_client):
    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

    with RankingServer(CORPUS) as server:
        es = RewritingElasticsearch(es_client(server), Rewriter(FailingBackend()), fusion="rrf")
        response = es.search(index="docs", query={"match": {"text": QUERY}}, size=3)
        assert requests_to(server, "/_msearch") == [] and search_of(server) == {"match": {"text": QUERY}}
        assert server.searches()[0]["body"]["size"] == 3  # as the caller wrote it
        assert response["tsqr"]["fused"] is False and response["tsqr"]["fusion"]["answer"] == "original"
        assert response["tsqr"]["fallback"] == 1


def test_rrf_with_opensearch_sync_and_async(tmp_path):
    skip_unless(is_installed("opensearchpy"), "opensearch-py is not installed (the 'opensearch' extra)")
    from opensearchpy import AsyncOpenSearch, OpenSearch

    from tsqr_plugins.adapters.opensearch import AsyncRewritingOpenSearch, RewritingOpenSearch

    body = {"query": {"match": {"text": QUERY}}, "size": 4}
    with RankingServer(CORPUS) as server:
        client = RewritingOpenSearch(OpenSearch([server.url]), file_rewriter(tmp_path), fusion="rrf", rrf_k=1)
        response = client.search(index="docs", body=body)
        (sent,) = requests_to(server, "/_msearch")
        fused = expected_fusion(server, sent["ndjson"][1], sent["ndjson"][3], k=1)
        assert [(h["_id"], h["_score"]) for h in response["hits"]["hits"]] == fused[:4]

        async def main():
            wrapped = AsyncRewritingOpenSearch(AsyncOpenSearch([server.url]), file_rewriter(tmp_path), fusion="rrf",
                                               rrf_k=1)
            try:
                return await wrapped.search(index="docs", body=body)
            finally:
                await wrapped.close()

        if is_installed("aiohttp"):
            server.requests.clear()
            answer = asyncio.run(main())
            assert len(requests_to(server, "/_msearch")) == 1 and requests_to(server, "/_search") == []
            assert answer["hits"]["hits"] == response["hits"]["hits"] and answer["tsqr"]["fused"] is True


def originals_first(searches: list[dict]) -> list[dict]:
    """The bodies of anytime's two searches, the original's first."""
    return sorted((r["body"] for r in searches), key=lambda body: REWRITE in json.dumps(body))


def test_anytime_answers_the_original_when_the_rewrite_is_late_and_the_fusion_when_it_is_in_time(
        es_client, tmp_path):
    import time

    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

    query = {"match": {"text": QUERY}}
    with RankingServer(CORPUS) as server:
        late = RewritingElasticsearch(es_client(server), slow_rewriter(tmp_path, 3.0), fusion="rrf", budget=0.3)
        started = time.monotonic()
        response = late.search(index="docs", query=query, size=2)
        assert time.monotonic() - started < 0.3 + 1.0  # the budget plus one local search, not the model's 3 s
        original = server.search_answer({"query": query, "size": 2})
        assert response["hits"]["hits"] == original["hits"]["hits"]
        assert response["tsqr"]["anytime"]["rewrite_in_time"] is False and response["tsqr"]["fused"] is False
        assert response["tsqr"]["queries"][0]["fallback"] is True and late.last_rewrites == []
        assert len(server.searches()) == 1

        server.requests.clear()
        fast = RewritingElasticsearch(es_client(server), slow_rewriter(tmp_path, 0.0), fusion="rrf", budget=5.0)
        response = fast.search(index="docs", query=query, from_=1, size=2)
        first, second = originals_first(server.searches())  # sent concurrently: either may come first
        assert second["query"] == {"match": {"text": {"query": REWRITE}}}
        fused = expected_fusion(server, first, second)[1:3]
        assert [(h["_id"], h["_score"]) for h in response["hits"]["hits"]] == fused
        assert response["tsqr"]["anytime"]["rewrite_in_time"] is True and response["tsqr"]["fused"] is True

        server.requests.clear()
        strict = RewritingElasticsearch(es_client(server), slow_rewriter(tmp_path, 3.0, strict=True),
                                        fusion="rrf", budget=0.2)
        with pytest.raises(BackendError, match="budget"):
            strict.search(index="docs", query=query)


def test_async_anytime_answers_the_original_within_the_budget(tmp_path):
    skip_unless(is_installed("elasticsearch") and is_installed("aiohttp"), "elasticsearch[async] is not installed")
    import time

    from elasticsearch import AsyncElasticsearch

    from tsqr_plugins.adapters.elasticsearch import AsyncRewritingElasticsearch

    async def main(server, rewriter):
        client = AsyncRewritingElasticsearch(AsyncElasticsearch(server.url), rewriter, fusion="rrf", budget=0.3)
        try:
            started = time.monotonic()
            response = await client.search(index="docs", query={"match": {"text": QUERY}}, size=3)
            return response, time.monotonic() - started
        finally:
            await client.close()

    with RankingServer(CORPUS) as server:
        response, elapsed = asyncio.run(main(server, slow_rewriter(tmp_path, 3.0)))
        assert elapsed < 0.3 + 1.0
        assert response["hits"]["hits"] == server.search_answer({"query": {"match": {"text": QUERY}}})["hits"]["hits"][:3]
        assert response["tsqr"]["anytime"]["rewrite_in_time"] is False
        server.requests.clear()
        response, _ = asyncio.run(main(server, slow_rewriter(tmp_path, 0.0)))
        first, second = originals_first(server.searches())
        assert [(h["_id"], h["_score"]) for h in response["hits"]["hits"]] == expected_fusion(server, first, second)[:3]
        assert response["tsqr"]["fused"] is True


def test_fusion_settings_are_checked():
    with pytest.raises(InputError, match="fusion must be one of"):
        StageSettings(fusion="linear")
    with pytest.raises(InputError, match="fusion='rrf'"):
        StageSettings(budget=0.5)
    for budget in (0, -1, float("nan"), float("inf"), True, "1"):  # as every host's budget (anytime.check_budget)
        with pytest.raises(InputError, match="positive"):
            StageSettings(fusion="rrf", budget=budget)
    with pytest.raises(InputError, match=">= 0"):
        StageSettings(fusion="rrf", rewrite_weight=-1)


@pytest.mark.parametrize("field", ["rrf_k", "original_weight", "rewrite_weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_fusion_constants_must_be_finite(field, value):
    """NaN or infinity for k or a weight made every fused _score NaN or Infinity: a fused answer
    (the proxy's JSON too) that no strict JSON reader takes. tsqr serve refuses them with a 400 and
    TongSearchQRFusion with an InputError; the client stages and tsqr proxy at construction too."""
    with pytest.raises(InputError, match=f"{field} must be a finite number >= 0"):
        StageSettings(fusion="rrf", **{field: value})


def test_rrf_ranks_by_the_engines_order_even_among_equal_scores():
    """Equal engine scores (common with BM25 on short fields) keep the engine's order as the
    ranking: the fusion must not re-sort a list by its scores (fusion.ranked breaks ties by id)."""
    from tsqr_plugins.adapters import fusedsearch

    def answer(order):
        hits = [{"_index": "docs", "_id": doc_id, "_score": 1.0} for doc_id in order]
        return {"took": 1, "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": 1.0, "hits": hits}}

    target, _ = fusedsearch.split({"body": {"query": {"match_all": {}}, "size": 3}})
    fused, info = fusedsearch.fuse(answer(["a", "b", "c"]), answer(["a", "b", "c"]), target,
                                   StageSettings(fusion="rrf"), took=2)
    assert [hit["_id"] for hit in fused["hits"]["hits"]] == ["a", "b", "c"]
    assert fused["hits"]["hits"][0]["_score"] == pytest.approx(2 / 61) and fused["took"] == 2
    assert info["hits"] == {"original": 3, "rewrite": 3, "both": 3}


def test_a_search_not_fused_under_a_budget_has_its_rewrite_bounded_by_it(es_client, tmp_path):
    """A sorted search is not fused; with a budget the rewrite still may not hold it longer (past
    the budget the original goes out, as with the rewriter's own timeout)."""
    import time

    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

    with RankingServer(CORPUS) as server:
        es = RewritingElasticsearch(es_client(server), slow_rewriter(tmp_path, 3.0), fusion="rrf", budget=0.3)
        started = time.monotonic()
        response = es.search(index="docs", query={"match": {"text": QUERY}}, sort=[{"date": "desc"}])
        assert time.monotonic() - started < 0.3 + 1.0
        assert search_of(server) == {"match": {"text": QUERY}} and response["tsqr"]["fallback"] == 1
        assert response["tsqr"]["fused"] is False and "sorted" in response["tsqr"]["fusion"]["reason"]
        server.requests.clear()
        started = time.monotonic()
        items = es.msearch(searches=[{"index": "docs"}, {"query": {"match": {"text": QUERY}}}])
        assert time.monotonic() - started < 0.3 + 1.0  # an msearch's rewrite is bounded by the budget too
        assert items["tsqr"][0]["fused"] is False and items["tsqr"][0]["fusion"]["reason"].startswith("nothing was rewritten")
        assert items["tsqr"][0]["fallback"] == 1


def test_rrf_fuses_each_msearch_item_in_one_msearch(es_client, tmp_path):
    """msearch() with fusion: a search that can be fused is two items of the one _msearch and its
    answer the fusion of both; a sorted one goes out rewritten as without fusion, one without a text
    query as written; every answer in the caller's order."""
    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

    fused_body = {"query": {"match": {"text": QUERY}}, "from": 1, "size": 2}
    sorted_body = {"query": {"match": {"text": QUERY}}, "sort": [{"date": "desc"}]}
    plain_body = {"query": {"match_all": {}}, "size": 1}
    with RankingServer(CORPUS) as server:
        es = RewritingElasticsearch(es_client(server), file_rewriter(tmp_path), fusion="rrf", rewrite_weight=2.0)
        response = es.msearch(searches=[{"index": "docs"}, fused_body, {"index": "docs", "routing": "r"}, sorted_body,
                                        {}, plain_body], index="docs")
        (sent,) = requests_to(server, "/_msearch")
        assert requests_to(server, "/_search") == []
        items = sent["ndjson"]
        assert items[0::2] == [{"index": "docs"}, {"index": "docs"}, {"index": "docs", "routing": "r"}, {}]
        first, second = items[1], items[3]
        assert first == {"query": {"match": {"text": QUERY}}, "from": 0, "size": 3}
        assert second == {"query": {"match": {"text": {"query": REWRITE}}}, "from": 0, "size": 3}
        assert items[5] == {**sorted_body, "query": {"match": {"text": {"query": REWRITE}}}}
        assert items[7] == plain_body
        answers, infos = response["responses"], response["tsqr"]
        assert len(answers) == len(infos) == 3
        fused = expected_fusion(server, first, second, weights=(1.0, 2.0))[1:3]
        assert [(h["_id"], h["_score"]) for h in answers[0]["hits"]["hits"]] == fused
        assert infos[0]["fused"] is True and infos[0]["fusion"]["weights"] == [1.0, 2.0]
        assert answers[1] == server.search_answer(items[5])
        assert infos[1]["fused"] is False and "sorted" in infos[1]["fusion"]["reason"] and infos[1]["rewritten"] == 1
        assert answers[2] == server.search_answer(plain_body) and infos[2]["fused"] is False


def test_rrf_msearch_on_a_failed_rewrite_sends_the_callers_searches_once(es_client):
    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

    searches = [{"index": "docs"}, {"query": {"match": {"text": QUERY}}, "size": 3}]
    with RankingServer(CORPUS) as server:
        es = RewritingElasticsearch(es_client(server), Rewriter(FailingBackend()), fusion="rrf")
        response = es.msearch(searches=searches)
        (sent,) = requests_to(server, "/_msearch")
        assert sent["ndjson"] == searches
        assert response["tsqr"][0]["fused"] is False and response["tsqr"][0]["fallback"] == 1
        strict = RewritingElasticsearch(es_client(server), Rewriter(FailingBackend(), strict=True), fusion="rrf")
        with pytest.raises(BackendError):
            strict.msearch(searches=searches)
