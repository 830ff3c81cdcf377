"""The Elasticsearch/OpenSearch stages against real nodes: Elasticsearch 9, OpenSearch 2.19 and 3.x.

`make test` starts the nodes from Maven Central (engines/engines.py) and passes their URLs in
TSQR_ES_URL / TSQR_OPENSEARCH_URL / TSQR_OPENSEARCH3_URL; there none of these tests may skip
(TSQR_ENGINES_REQUIRED=1 turns a missing node into a failure). Run alone, they skip with the
reason when a URL is not set.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.conftest import engine_url, indexed_corpus
from tsqr_plugins import Rewriter
from tsqr_plugins.errors import BackendError
from tsqr_plugins.testing.conformance import (
    CORPUS, K, QUERY, RELEVANT, REWRITE, AdapterConformance, FailingBackend, file_rewriter,
)

pytestmark = pytest.mark.integration

ENGINES = ["elasticsearch", "opensearch", "opensearch3"]


def ids(response) -> list[str]:
    return [hit["_id"] for hit in response["hits"]["hits"]]


@pytest.fixture(scope="module", params=ENGINES)
def live(request):
    """(engine, url, index) with CORPUS indexed through the shipped template's settings."""
    engine = request.param
    url = engine_url(engine)
    with indexed_corpus(url, "tsqr-test") as name:
        yield engine, url, name


def forty_field_index(url: str) -> str:
    """A new index with 40 text fields f_0..f_39, CORPUS in f_3: a field pattern over it passes
    the clause limit with a long rewrite."""
    index = f"tsqr-fields-{uuid.uuid4().hex[:6]}"
    fields = {f"f_{i}": {"type": "text"} for i in range(40)}
    assert httpx.put(f"{url}/{index}", json={"mappings": {"properties": fields}}).status_code == 200
    for doc_id, text in CORPUS.items():
        httpx.put(f"{url}/{index}/_doc/{doc_id}", params={"refresh": "true"}, json={"f_3": text})
    return index


def python_client(engine: str, url: str, asynchronous: bool = False):
    if engine == "elasticsearch":
        from elasticsearch import AsyncElasticsearch, Elasticsearch

        return (AsyncElasticsearch if asynchronous else Elasticsearch)(url)
    from opensearchpy import AsyncOpenSearch, OpenSearch

    return (AsyncOpenSearch if asynchronous else OpenSearch)(url)


def stage(engine: str, client, rewriter, asynchronous: bool = False, **options):
    if engine == "elasticsearch":
        from tsqr_plugins.adapters.elasticsearch import AsyncRewritingElasticsearch, RewritingElasticsearch

        cls = AsyncRewritingElasticsearch if asynchronous else RewritingElasticsearch
    else:
        from tsqr_plugins.adapters.opensearch import AsyncRewritingOpenSearch, RewritingOpenSearch

        cls = AsyncRewritingOpenSearch if asynchronous else RewritingOpenSearch
    return cls(client, rewriter, **options)


def search(engine: str, client, index: str, body: dict):
    """One search call in each client's own style (ES 9 takes keywords, opensearch-py a body)."""
    if engine == "elasticsearch":
        return client.search(index=index, **body)
    return client.search(index=index, body=body)


def msearch(engine: str, client, searches: list[dict]):
    if engine == "elasticsearch":
        return client.msearch(searches=searches)
    return client.msearch(body=searches)


@pytest.mark.parametrize("scoring", ["match", "bm25q"])
def test_client_stage_rewrites_search_and_msearch(live, tmp_path, scoring):
    engine, url, index = live
    client = python_client(engine, url)
    body = {"query": {"match": {"text": QUERY}}, "size": 3}
    before = ids(search(engine, client, index, body))
    assert before[0] not in RELEVANT
    rewriting = stage(engine, client, file_rewriter(tmp_path), scoring=scoring)
    response = search(engine, rewriting, index, body)
    assert set(ids(response)[:2]) == RELEVANT
    assert response["tsqr"]["queries"][0]["rewrite"] == REWRITE
    searches = [{"index": index}, body, {"index": index}, {"query": {"match": {"text": "lamp posts"}}, "size": 3}]
    responses = msearch(engine, rewriting, searches)["responses"]
    assert set(ids(responses[0])[:2]) == RELEVANT
    assert ids(responses[1]) == ids(search(engine, client, index, searches[3]))  # not in the file: as sent


def test_bm25q_weights_from_the_nodes_termvectors_equal_the_embedded_engines(live):
    """BM25Q's query weights, computed from the node's own analyzer and statistics (one
    `_termvectors` call), equal the embedded engine's on the same documents: same tokens, same df."""
    from tsqr_plugins import querydsl
    from tsqr_plugins.search.bm25 import BM25Index

    engine, url, index = live
    embedded = BM25Index.build(list(CORPUS), list(CORPUS.values()))
    for text in (QUERY, REWRITE, "lamps lamps night unknownword"):
        answer = httpx.post(f"{url}/{index}/_termvectors", json=querydsl.termvectors_body(text, ["text"])).json()
        term_ids, weights = embedded.query_vector(text)
        by_id = dict(zip(term_ids, weights))
        expected = {term: by_id[i] for term, i in embedded.vocabulary.items() if i in by_id}
        assert querydsl.bm25q_weights(answer, "text") == pytest.approx(expected, rel=1e-6), (engine, text)


@pytest.mark.parametrize("mode", ["replace", "concat", "both"])
def test_modes(live, tmp_path, mode):
    engine, url, index = live
    rewriting = stage(engine, python_client(engine, url), file_rewriter(tmp_path), scoring="bm25q", mode=mode)
    response = search(engine, rewriting, index, {"query": {"match": {"text": QUERY}}, "size": 3})
    assert RELEVANT <= set(ids(response)), mode
    assert response["tsqr"]["rewritten"] == 1, mode


def test_fail_open_sends_the_callers_query_and_strict_raises(live):
    engine, url, index = live
    client = python_client(engine, url)
    body = {"query": {"bool": {"must": [{"match": {"text": {"query": QUERY, "operator": "or"}}}]}}, "size": 3}
    direct = search(engine, client, index, body)
    failing = stage(engine, client, Rewriter(FailingBackend()))
    answer = search(engine, failing, index, body)
    assert ids(answer) == ids(direct)
    assert [h["_score"] for h in answer["hits"]["hits"]] == [h["_score"] for h in direct["hits"]["hits"]]
    assert answer["tsqr"]["queries"][0]["fallback"] is True
    strict = stage(engine, client, Rewriter(FailingBackend(), strict=True))
    with pytest.raises(BackendError):
        search(engine, strict, index, body)


def test_async_client_stage(live, tmp_path):
    engine, url, index = live

    async def run():
        client = python_client(engine, url, asynchronous=True)
        try:
            rewriting = stage(engine, client, file_rewriter(tmp_path), asynchronous=True, scoring="bm25q")
            body = {"query": {"match": {"text": QUERY}}, "size": 3}
            if engine == "elasticsearch":
                return await rewriting.search(index=index, **body)
            return await rewriting.search(index=index, body=body)
        finally:
            await client.close()

    assert set(ids(asyncio.run(run()))[:2]) == RELEVANT


class TestLiveConformance(AdapterConformance):
    """The shared adapter checks on each live engine."""

    empty_query_passes_through = True

    @pytest.fixture
    def make_adapter(self, live):
        self.engine, url, self.index = live
        client = python_client(self.engine, url)
        return lambda rewriter: stage(self.engine, client, rewriter, scoring="bm25q")

    def search(self, adapter, queries):
        return [ids(search(self.engine, adapter, self.index, {"query": {"match": {"text": q}}, "size": K}))
                for q in queries]

    def search_batch(self, adapter, queries):
        searches = []
        for query in queries:
            searches += [{"index": self.index}, {"query": {"match": {"text": query}}, "size": K}]
        return [ids(response) for response in msearch(self.engine, adapter, searches)["responses"]]

    def last_rewrites(self, adapter):
        return adapter.last_rewrites


def test_proxy_rewrites_search_and_passes_everything_else_through(live, tmp_path):
    """`tsqr proxy` in front of the node: `_search` rewritten; any other request answers exactly as
    the node answers it directly (status, headers, body)."""
    from tsqr_plugins.adapters.stage import StageSettings
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.testing.service import RunningApp

    engine, url, index = live
    proxy = SearchProxy(url, file_rewriter(tmp_path), StageSettings(scoring="bm25q"))
    body = {"query": {"match": {"text": QUERY}}, "size": 3}
    ndjson = {"Content-Type": "application/x-ndjson"}
    bulk = (f'{{"index": {{"_index": "{index}-bulk", "_id": "x1"}}}}\n{{"text": "lamp"}}\n'
            f'{{"delete": {{"_index": "{index}-bulk", "_id": "nope"}}}}\n')
    msearch = f'{{"index": "{index}"}}\n{{"query": {{"match": {{"text": "lamps"}}}}, "size": 2}}\n'
    requests = [
        ("GET", f"/{index}/_doc/d1", None, {}),
        ("GET", f"/{index}/_doc/missing", None, {}),
        ("HEAD", f"/{index}", None, {}),
        ("GET", f"/{index}/_mapping", None, {}),
        ("GET", f"/{index}/_count", None, {}),
        ("POST", f"/{index}/_count", b'{"query": {"match": {"text": "lamps"}}}', {"Content-Type": "application/json"}),
        ("POST", "/_msearch", msearch.encode(), ndjson),
        ("POST", f"/{index}/_search", b"{not json", {"Content-Type": "application/json"}),
        ("DELETE", "/no-such-index-tsqr", None, {}),
        ("GET", "/_cat/indices/no-such-index-tsqr?format=json", None, {}),
    ]
    with RunningApp(create_proxy_app(proxy)) as running, httpx.Client() as http:
        answer = http.post(f"{running.url}/{index}/_search", json=body)
        assert answer.status_code == 200 and answer.headers["X-Tsqr-Rewritten"] == "1"
        assert set(ids(answer.json())[:2]) == RELEVANT
        for method, path, content, headers in requests:
            direct = http.request(method, url + path, content=content, headers=headers)
            proxied = http.request(method, running.url + path, content=content, headers=headers)
            assert proxied.status_code == direct.status_code, (method, path)
            assert without_timings(proxied.content) == without_timings(direct.content), (method, path)
            timed = b"\"took\"" in direct.content
            assert comparable_headers(proxied, timed) == comparable_headers(direct, timed), (method, path)

        # _bulk (its answer carries a timing) and scroll pass through and work
        proxied = http.post(f"{running.url}/_bulk?refresh=true", content=bulk.encode(), headers=ndjson)
        assert proxied.status_code == 200 and [next(iter(i)) for i in proxied.json()["items"]] == ["index", "delete"]
        first = http.post(f"{running.url}/{index}/_search?scroll=1m",
                          json={"query": {"match_all": {}}, "size": 2, "sort": ["_doc"]}).json()
        scroll_id, seen = first["_scroll_id"], ids(first)
        while True:
            page = http.post(f"{running.url}/_search/scroll", json={"scroll": "1m", "scroll_id": scroll_id}).json()
            if not page["hits"]["hits"]:
                break
            seen += ids(page)
            scroll_id = page["_scroll_id"]
        assert sorted(seen) == sorted(CORPUS)
        http.request("DELETE", f"{running.url}/_search/scroll", json={"scroll_id": scroll_id})
        http.delete(f"{url}/{index}-bulk")


def comparable_headers(response, timed: bool) -> list[tuple[str, str]]:
    """Headers an intermediary relays (RFC 9110 7.6.1: not hop-by-hop), as a sorted multiset; a
    body with a timing in it has its own length each time."""
    skipped = {"connection", "keep-alive", "transfer-encoding", "date", "server"} | ({"content-length"} if timed else set())
    return sorted((k.lower(), v) for k, v in response.headers.multi_items() if k.lower() not in skipped)


def without_timings(content: bytes) -> bytes:
    """The body with every "took" (milliseconds, different each call) removed."""
    import json

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "took"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    try:
        return json.dumps(strip(json.loads(content))).encode()
    except ValueError:
        return content


def test_a_field_pattern_past_the_clause_limit_falls_back_to_the_original(live, tmp_path):
    """A multi_match on a pattern matching 40 fields: the stage counts a pattern as
    FIELDS_PER_PATTERN fields, so a long rewrite passes OpenSearch's 1,024 clauses (Elasticsearch 9
    sizes its limit from the heap and takes it). Both stages then search with the original query
    instead of failing the search (before: a 400 from OpenSearch, no fallback)."""
    import json

    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.adapters.stage import StageSettings
    from tsqr_plugins.backends.file import FileBackend
    from tsqr_plugins.testing.conformance import LONG_REWRITE
    from tsqr_plugins.testing.service import RunningApp

    engine, url, _ = live
    index = forty_field_index(url)
    rewrites = tmp_path / "long.json"
    rewrites.write_text(json.dumps({QUERY: LONG_REWRITE}))
    rewriter = Rewriter(FileBackend(rewrites))
    body = {"query": {"multi_match": {"query": QUERY, "fields": ["f_*"]}}, "size": 3}
    client = python_client(engine, url)
    direct = ids(search(engine, client, index, body))
    try:
        answer = search(engine, stage(engine, client, rewriter), index, body)
        if engine == "elasticsearch":
            assert answer["tsqr"]["rewritten"] == 1
        else:
            assert answer["tsqr"]["fallback"] == 1 and "clause limit" in answer["tsqr"]["error"]
            assert ids(answer) == direct
        with RunningApp(create_proxy_app(SearchProxy(url, rewriter, StageSettings()))) as running:
            proxied = httpx.post(f"{running.url}/{index}/_search", json=body, timeout=60)
            assert proxied.status_code == 200, proxied.text[:300]
            if engine != "elasticsearch":
                assert proxied.headers["X-Tsqr-Rewritten"] == "0" and ids(proxied.json()) == direct
    finally:
        httpx.delete(f"{url}/{index}")


def test_retrievers_and_combined_fields_on_the_nodes(live, tmp_path):
    """combined_fields (Elasticsearch, OpenSearch 3.x: 2.19 answers "unknown query"), and
    Elasticsearch's standard retriever (in the server itself;
    rrf and linear are x-pack, absent from the integ-test zip, and are covered in
    test_search_stage), rewritten by the client stage and the proxy; a query_string is named in the
    metadata and the proxy's X-Tsqr-Not-Rewritten."""
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.adapters.stage import StageSettings
    from tsqr_plugins.testing.service import RunningApp

    engine, url, index = live
    client = python_client(engine, url)
    rewriting = stage(engine, client, file_rewriter(tmp_path))
    wanted = ids(search(engine, client, index, {"query": {"match": {"text": REWRITE}}, "size": 3}))
    combined = {"query": {"combined_fields": {"query": QUERY, "fields": ["text"], "operator": "and"}}, "size": 3}
    bodies = []
    if httpx.post(f"{url}/{index}/_search", json=combined).status_code == 200:
        answer = search(engine, rewriting, index, combined)
        assert answer["tsqr"]["rewritten"] == 1 and set(ids(answer)[:2]) == RELEVANT
        bodies.append(combined)
    else:
        assert engine == "opensearch"  # 2.19
    if engine == "elasticsearch":
        retriever = {"retriever": {"standard": {"query": {"match": {"text": QUERY}}}}, "size": 3}
        answer = rewriting.search(index=index, **retriever)
        assert answer["tsqr"]["rewritten"] == 1 and ids(answer) == wanted
        bodies.append(retriever)
    syntax = {"query": {"bool": {"should": [{"query_string": {"query": "moths AND lamps"}},
                                            {"match": {"text": QUERY}}]}}, "size": 3}
    answer = search(engine, rewriting, index, syntax)
    assert answer["tsqr"]["not_rewritten"][0]["query"] == "query_string"
    with RunningApp(create_proxy_app(SearchProxy(url, file_rewriter(tmp_path), StageSettings()))) as running:
        for body in bodies:
            proxied = httpx.post(f"{running.url}/{index}/_search", json=body, timeout=60)
            assert proxied.headers["X-Tsqr-Rewritten"] == "1" and set(ids(proxied.json())[:2]) == RELEVANT, body
        proxied = httpx.post(f"{running.url}/{index}/_search", json=syntax, timeout=60)
        assert proxied.headers["X-Tsqr-Not-Rewritten"] == "query_string"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_the_proxy_rewrites_compressed_search_bodies(live, tmp_path, encoding):
    """A gzip or deflate `_search` body (the nodes take both) is decoded, rewritten and sent decoded;
    a body with nothing to rewrite goes out compressed as it came; a decoded body past --max-body-mb
    is a 413 (a small compressed body can expand a thousandfold). Before, compressed bodies went
    through unrewritten."""
    import gzip
    import json
    import zlib

    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.adapters.stage import StageSettings
    from tsqr_plugins.testing.service import RunningApp

    engine, url, index = live
    compress = gzip.compress if encoding == "gzip" else zlib.compress
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    body = {"query": {"match": {"text": QUERY}}, "size": 3}
    proxy = SearchProxy(url, file_rewriter(tmp_path), StageSettings(), max_body_bytes=64 * 1024)
    with RunningApp(create_proxy_app(proxy)) as running:
        answer = httpx.post(f"{running.url}/{index}/_search", content=compress(json.dumps(body).encode()), headers=headers)
        assert answer.headers["X-Tsqr-Rewritten"] == "1" and set(ids(answer.json())[:2]) == RELEVANT
        untouched = compress(json.dumps({"query": {"match_all": {}}, "size": 2}).encode())
        assert httpx.post(f"{running.url}/{index}/_search", content=untouched, headers=headers).status_code == 200
        bomb = compress(json.dumps({"query": {"match_all": {}}, "pad": " " * (10 * 1024 * 1024)}).encode())
        assert len(bomb) < 64 * 1024
        refused = httpx.post(f"{running.url}/{index}/_search", content=bomb, headers=headers)
        assert refused.status_code == 413 and "decoded" in refused.text


def test_the_proxy_relays_a_long_rewritten_answer_and_falls_back_on_shard_failures(live, tmp_path):
    """What the proxy reads of a rewritten search's answer before relaying it (its first 64 KiB)
    comes back whole with the rest; and when the clause limit fails some shards only (a 200 with
    shard failures: a pattern matching 40 fields in one index, one field in the other), the
    original search goes out instead of a silently partial answer (found by review)."""
    import json

    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.adapters.stage import StageSettings
    from tsqr_plugins.backends.file import FileBackend
    from tsqr_plugins.testing.conformance import LONG_REWRITE
    from tsqr_plugins.testing.service import RunningApp

    engine, url, index = live
    wide, narrow = f"tsqr-wide-{uuid.uuid4().hex[:6]}", f"tsqr-narrow-{uuid.uuid4().hex[:6]}"
    wide_fields = {f"f_{i}": {"type": "text"} for i in range(40)}
    assert httpx.put(f"{url}/{wide}", json={"mappings": {"properties": wide_fields}}).status_code == 200
    assert httpx.put(f"{url}/{narrow}", json={"mappings": {"properties": {"f_0": {"type": "text"}}}}).status_code == 200
    lines = "".join(json.dumps({"index": {"_index": narrow, "_id": f"n{i}"}}) + "\n"
                    + json.dumps({"f_0": f"moths lamps {i} " + "padding " * 150}) + "\n" for i in range(300))
    httpx.post(f"{url}/_bulk", params={"refresh": "true"}, content=lines,
               headers={"Content-Type": "application/x-ndjson"}).raise_for_status()
    rewrites = tmp_path / "long.json"
    rewrites.write_text(json.dumps({"moths lamps": "moths lamps", QUERY: LONG_REWRITE}))
    proxy = SearchProxy(url, Rewriter(FileBackend(rewrites, on_missing="fallback")), StageSettings())
    try:
        with RunningApp(create_proxy_app(proxy)) as running:
            body = {"query": {"match": {"f_0": "moths lamps"}}, "size": 300, "sort": ["_doc"]}
            proxied = httpx.post(f"{running.url}/{narrow}/_search", json=body, timeout=60)
            direct = httpx.post(f"{url}/{narrow}/_search", json=body, timeout=60)
            assert len(proxied.content) > 64 * 1024 and proxied.headers["X-Tsqr-Rewritten"] == "1"
            assert proxied.json()["hits"] == direct.json()["hits"]

            both = {"query": {"multi_match": {"query": QUERY, "fields": ["f_*"]}}, "size": 3}
            proxied = httpx.post(f"{running.url}/{wide},{narrow}/_search", json=both, timeout=60)
            assert proxied.status_code == 200
            if engine != "elasticsearch":  # Elasticsearch 9 takes the clauses
                assert proxied.headers["X-Tsqr-Rewritten"] == "0", proxied.text[:300]
                assert proxied.json()["_shards"]["failed"] == 0
    finally:
        httpx.delete(f"{url}/{wide}")
        httpx.delete(f"{url}/{narrow}")


def test_the_client_stage_falls_back_on_shard_failures_past_the_clause_limit(live, tmp_path):
    """The client-stage side of the test above: a 200 whose shard failures are the clause limit is
    searched again with the original query."""
    import json

    from tsqr_plugins.backends.file import FileBackend
    from tsqr_plugins.testing.conformance import LONG_REWRITE

    engine, url, index = live
    wide = f"tsqr-wide-{uuid.uuid4().hex[:6]}"
    fields = {f"f_{i}": {"type": "text"} for i in range(40)}
    assert httpx.put(f"{url}/{wide}", json={"mappings": {"properties": fields}}).status_code == 200
    rewrites = tmp_path / "long.json"
    rewrites.write_text(json.dumps({QUERY: LONG_REWRITE}))
    client = python_client(engine, url)
    rewriting = stage(engine, client, Rewriter(FileBackend(rewrites)))
    body = {"query": {"multi_match": {"query": QUERY, "fields": ["f_*", "text"]}}, "size": 3}
    try:
        answer = search(engine, rewriting, f"{wide},{index}", body)
        assert answer["_shards"]["failed"] == 0
        if engine != "elasticsearch":
            assert answer["tsqr"]["fallback"] == 1 and "clause limit" in answer["tsqr"]["error"]
            # msearch items are not searched again, but a refused one says so (it claimed rewritten: 1)
            items = msearch(engine, rewriting, [{"index": wide}, body])
            assert "error" in items["responses"][0] and "clause limit" in items["tsqr"][0]["error"]
    finally:
        httpx.delete(f"{url}/{wide}")


def test_the_proxy_reads_only_json_answers_for_the_clause_limit(live, tmp_path):
    """A document holding the words of the clause-limit error must not send the proxy back to the
    original query: a YAML answer is not read at all, and a JSON one without hits (filter_path)
    shows no shard failure (a second review found both taken for a refusal)."""
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.adapters.stage import StageSettings
    from tsqr_plugins.testing.service import RunningApp

    engine, url, index = live
    trap = f"tsqr-trap-{uuid.uuid4().hex[:6]}"
    httpx.put(f"{url}/{trap}/_doc/t1", params={"refresh": "true"},
              json={"text": "too_many_nested_clauses: maxClauseCount is set to 1024 " + REWRITE})
    try:
        with RunningApp(create_proxy_app(SearchProxy(url, file_rewriter(tmp_path), StageSettings()))) as running:
            for params in ({"format": "yaml"}, {"filter_path": "took,_shards"}):
                answer = httpx.post(f"{running.url}/{trap}/_search", params=params, timeout=60,
                                    json={"query": {"match": {"text": QUERY}}})
                assert answer.status_code == 200 and answer.headers["X-Tsqr-Rewritten"] == "1", (params, answer.text[:200])
    finally:
        httpx.delete(f"{url}/{trap}")


# -- fusion (fusion="rrf") and anytime rewriting (budget) ----------------------------------------


def node_fusion(engine, client, index, original: dict, rewritten: dict, weights=(1.0, 1.0),
                k: float = 60) -> list[tuple[str, float]]:
    """fusion.rrf of the node's own rankings of the two bodies, searched directly (first from + size
    hits of each; the node's order is the ranking)."""
    from tsqr_plugins import fusion

    depth = original.get("from", 0) + original["size"]
    runs = []
    for body in (original, rewritten):
        hits = search(engine, client, index, {**body, "from": 0, "size": depth})["hits"]["hits"]
        runs.append({hit["_id"]: len(hits) - rank for rank, hit in enumerate(hits)})
    scores = fusion.rrf(runs, k, list(weights), depth)
    ranked = fusion.ranked(scores)[original.get("from", 0):depth]
    return [(doc_id, scores[doc_id]) for doc_id in ranked]


def fused_hits(response) -> list[tuple[str, float]]:
    return [(hit["_id"], hit["_score"]) for hit in response["hits"]["hits"]]


REWRITTEN_BODY = {"query": {"match": {"text": {"query": REWRITE}}}}


@pytest.mark.parametrize("asynchronous", [False, True])
def test_rrf_answers_the_fusion_of_the_nodes_own_rankings(live, tmp_path, asynchronous):
    """fusion="rrf" on a real node: the fused page equals fusion.rrf of the two lists the node gives
    when the original and the rewritten bodies are searched directly; total and aggregations are
    the original's."""
    engine, url, index = live
    client = python_client(engine, url)
    body = {"query": {"match": {"text": QUERY}}, "from": 1, "size": 3,
            "aggs": {"lamps": {"filter": {"match": {"text": "lamps"}}}}}
    options = {"fusion": "rrf", "rewrite_weight": 2.0}
    if asynchronous:
        async def run():
            async_client = python_client(engine, url, asynchronous=True)
            try:
                rewriting = stage(engine, async_client, file_rewriter(tmp_path), asynchronous=True, **options)
                if engine == "elasticsearch":
                    return await rewriting.search(index=index, **body)
                return await rewriting.search(index=index, body=body)
            finally:
                await async_client.close()

        response = asyncio.run(run())
    else:
        response = search(engine, stage(engine, client, file_rewriter(tmp_path), **options), index, body)
    expected = node_fusion(engine, client, index, body, {**REWRITTEN_BODY, "size": 3, "from": 1}, (1.0, 2.0))
    assert [doc_id for doc_id, _ in fused_hits(response)] == [doc_id for doc_id, _ in expected]
    assert [score for _, score in fused_hits(response)] == pytest.approx([score for _, score in expected])
    direct = search(engine, client, index, body)
    assert response["hits"]["total"] == direct["hits"]["total"]
    assert response["aggregations"] == direct["aggregations"]
    assert response["tsqr"]["fused"] is True and response["tsqr"]["fusion"]["depth"] == 4
    assert set(ids(response)) & RELEVANT  # the rewrite's documents reach the page


@pytest.mark.parametrize("asynchronous", [False, True])
def test_rrf_msearch_fuses_each_item_as_search_does(live, tmp_path, asynchronous):
    """msearch() with fusion="rrf" on a real node: each fusable item's page equals fusion.rrf of the
    node's own rankings (as search() fuses it), a sorted item is the node's answer to the rewritten
    body, an item whose rewrite fell back is the node's answer to it as written, all from one _msearch."""
    engine, url, index = live
    client = python_client(engine, url)
    fused_body = {"query": {"match": {"text": QUERY}}, "from": 1, "size": 3}
    second_body = {"query": {"match": {"text": "lamps"}}, "size": 2}  # no rewrite in the file: falls back
    sorted_body = {"query": {"match": {"text": QUERY}}, "sort": [{"_doc": "asc"}], "size": 2}
    searches = [{"index": index}, fused_body, {"index": index}, sorted_body, {"index": index}, second_body]
    options = {"fusion": "rrf", "rewrite_weight": 2.0}
    if asynchronous:
        async def run():
            async_client = python_client(engine, url, asynchronous=True)
            try:
                rewriting = stage(engine, async_client, file_rewriter(tmp_path), asynchronous=True, **options)
                if engine == "elasticsearch":
                    return await rewriting.msearch(searches=searches)
                return await rewriting.msearch(body=searches)
            finally:
                await async_client.close()

        response = asyncio.run(run())
    else:
        response = msearch(engine, stage(engine, client, file_rewriter(tmp_path), **options), searches)
    answers, infos = response["responses"], response["tsqr"]
    expected = node_fusion(engine, client, index, fused_body, {**REWRITTEN_BODY, "from": 1, "size": 3}, (1.0, 2.0))
    assert [doc_id for doc_id, _ in fused_hits(answers[0])] == [doc_id for doc_id, _ in expected]
    assert [score for _, score in fused_hits(answers[0])] == pytest.approx([score for _, score in expected])
    assert infos[0]["fused"] is True
    assert infos[1]["fused"] is False and "sorted" in infos[1]["fusion"]["reason"]
    rewritten_sorted = search(engine, client, index, {**sorted_body, **REWRITTEN_BODY})
    assert ids(answers[1]) == ids(rewritten_sorted)
    assert infos[2]["fused"] is False and infos[2]["fallback"] == 1
    assert ids(answers[2]) == ids(search(engine, client, index, second_body))


def test_anytime_answers_the_original_within_the_budget_or_the_fusion(live, tmp_path):
    """budget on a real node: a rewriter slower than the budget does not hold the answer (the
    original's hits, said so); a fast one gives the fusion of both rankings."""
    import time

    from tsqr_plugins.testing.conformance import slow_rewriter

    engine, url, index = live
    client = python_client(engine, url)
    body = {"query": {"match": {"text": QUERY}}, "size": 3}
    direct = search(engine, client, index, body)
    late = stage(engine, client, slow_rewriter(tmp_path, 5.0), fusion="rrf", budget=0.5)
    started = time.monotonic()
    response = search(engine, late, index, body)
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 2.0, elapsed  # the budget and one search, not the model's 5 s
    assert fused_hits(response) == fused_hits(direct)
    assert response["tsqr"]["anytime"]["rewrite_in_time"] is False and response["tsqr"]["fused"] is False

    fast = stage(engine, client, slow_rewriter(tmp_path, 0.0), fusion="rrf", budget=30.0)
    response = search(engine, fast, index, body)
    expected = node_fusion(engine, client, index, body, {**REWRITTEN_BODY, "size": 3})
    assert [doc_id for doc_id, _ in fused_hits(response)] == [doc_id for doc_id, _ in expected]
    assert [score for _, score in fused_hits(response)] == pytest.approx([score for _, score in expected])
    assert response["tsqr"]["anytime"]["rewrite_in_time"] is True and response["tsqr"]["fused"] is True


def test_a_refused_rewritten_search_answers_the_originals_page_unfused(live, tmp_path):
    """A rewrite past OpenSearch's clause limit (a pattern matching 40 fields): the rewritten
    _msearch item (or anytime's rewritten search) is refused, and the answer is the original's own
    page, fused: false with the reason, never a fusion with an empty list. Elasticsearch 9 takes the
    clauses and fuses."""
    import json

    from tsqr_plugins.backends.file import FileBackend
    from tsqr_plugins.testing.conformance import LONG_REWRITE

    engine, url, _ = live
    index = forty_field_index(url)
    rewrites = tmp_path / "long.json"
    rewrites.write_text(json.dumps({QUERY: LONG_REWRITE}))
    body = {"query": {"multi_match": {"query": QUERY, "fields": ["f_*"]}}, "from": 1, "size": 2}
    client = python_client(engine, url)
    direct = search(engine, client, index, body)
    try:
        for options in ({}, {"budget": 30.0}):
            rewriting = stage(engine, client, Rewriter(FileBackend(rewrites)), fusion="rrf", **options)
            answer = search(engine, rewriting, index, body)
            if engine == "elasticsearch":
                assert answer["tsqr"]["fused"] is True, options
            else:
                assert answer["tsqr"]["fused"] is False and "refused" in answer["tsqr"]["fusion"]["reason"], options
                assert answer["tsqr"]["fallback"] == 1 and "clause limit" in answer["tsqr"]["error"]
                assert fused_hits(answer) == fused_hits(direct), options
    finally:
        httpx.delete(f"{url}/{index}")
