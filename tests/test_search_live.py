"""Integration tests against real Elasticsearch / OpenSearch servers.

They run when TSQR_ES_URL / TSQR_OPENSEARCH_URL are set (e.g. `docker compose -f
integrations/compose.yaml up -d`, then TSQR_ES_URL=http://127.0.0.1:9200
TSQR_OPENSEARCH_URL=http://127.0.0.1:9201) and skip with the reason otherwise: no such server can
be installed on the machines this project is built on. The OpenSearch pipeline test also needs
TSQR_SERVICE_HOST: the host name OpenSearch uses to reach this machine (host.docker.internal with
the compose file); the test's `tsqr serve` then listens on all interfaces.
"""

from __future__ import annotations

import json
import os
import uuid

import httpx
import pytest

from tests.conftest import skip_unless
from tsqr_plugins import Rewriter
from tsqr_plugins.lazy import is_installed
from tsqr_plugins.search.bulk import BulkIndexer
from tsqr_plugins.testing.conformance import (
    CORPUS, K, QUERY, RELEVANT, REWRITE, AdapterConformance, FailingBackend, file_rewriter,
)

pytestmark = pytest.mark.integration

ES_URL = os.environ.get("TSQR_ES_URL")
OPENSEARCH_URL = os.environ.get("TSQR_OPENSEARCH_URL")


@pytest.fixture(scope="module")
def es_index():
    skip_unless(bool(ES_URL), "TSQR_ES_URL is not set: no Elasticsearch server (see integrations/compose.yaml)")
    skip_unless(is_installed("elasticsearch"), "the elasticsearch client is not installed")
    name = f"tsqr-test-{uuid.uuid4().hex[:8]}"
    indexer = BulkIndexer(ES_URL)
    indexer.create_index(name)
    indexer.index(name, list(CORPUS), list(CORPUS.values()), progress=False)
    yield name
    httpx.delete(f"{ES_URL}/{name}")
    indexer.close()


def ids(response) -> list[str]:
    return [hit["_id"] for hit in response["hits"]["hits"]]


def test_elasticsearch_client_stage_live(es_index, tmp_path):
    from elasticsearch import Elasticsearch

    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

    client = Elasticsearch(ES_URL)
    query = {"match": {"text": QUERY}}
    before = ids(client.search(index=es_index, query=query, size=3))
    assert before[0] not in RELEVANT
    for scoring in ("match", "bm25q"):
        stage = RewritingElasticsearch(client, file_rewriter(tmp_path), scoring=scoring)
        response = stage.search(index=es_index, query=query, size=3)
        assert set(ids(response)[:2]) == RELEVANT, scoring
        assert response["tsqr"]["queries"][0]["rewrite"] == REWRITE
    failing = RewritingElasticsearch(client, Rewriter(FailingBackend()))
    assert ids(failing.search(index=es_index, query=query, size=3)) == before  # fail-open


def test_proxy_live(es_index, tmp_path):
    from tsqr_plugins.adapters.stage import StageSettings
    from tsqr_plugins.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.testing.service import RunningApp

    proxy = SearchProxy(ES_URL, file_rewriter(tmp_path), StageSettings(scoring="bm25q"))
    with RunningApp(create_proxy_app(proxy)) as running:
        response = httpx.post(f"{running.url}/{es_index}/_search", json={"query": {"match": {"text": QUERY}}, "size": 3})
        assert response.status_code == 200 and response.headers["X-Tsqr-Rewritten"] == "1"
        assert set(ids(response.json())[:2]) == RELEVANT
        assert httpx.get(f"{running.url}/{es_index}/_count").json()["count"] == len(CORPUS)  # pass-through


def test_opensearch_pipeline_live(tmp_path):
    skip_unless(bool(OPENSEARCH_URL), "TSQR_OPENSEARCH_URL is not set: no OpenSearch server (see integrations/compose.yaml)")
    skip_unless(bool(os.environ.get("TSQR_SERVICE_HOST")),
                "TSQR_SERVICE_HOST is not set: how OpenSearch reaches this machine's tsqr serve")
    pytest.importorskip("uvicorn")
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller
    from tsqr_plugins.service import ServiceConfig, create_app
    from tsqr_plugins.testing.service import RunningApp

    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(json.dumps({QUERY: REWRITE}))
    app = create_app(ServiceConfig(engine="file", rewrites=str(rewrites), no_cache=True))
    name = f"tsqr-test-{uuid.uuid4().hex[:6]}"
    index = f"{name}-docs"
    with RunningApp(app, host="0.0.0.0") as service:
        installer = OpenSearchInstaller(OPENSEARCH_URL)
        service_url = f"http://{os.environ['TSQR_SERVICE_HOST']}:{service.port}"
        try:
            installer.install(service_url, name=name, index_template=False)
            indexer = BulkIndexer(OPENSEARCH_URL)
            indexer.create_index(index)
            indexer.index(index, list(CORPUS), list(CORPUS.values()), progress=False)
            body = {"query": {"match": {"text": {"query": QUERY}}}, "size": 3}
            plain = ids(httpx.post(f"{OPENSEARCH_URL}/{index}/_search", json=body).json())
            rewritten = ids(httpx.post(f"{OPENSEARCH_URL}/{index}/_search?search_pipeline={name}-rewrite",
                                       json=body).json())
            assert plain[0] not in RELEVANT and set(rewritten[:2]) == RELEVANT
            unknown = {"query": {"match": {"text": {"query": "lamp posts"}}}, "size": 3}
            answer = httpx.post(f"{OPENSEARCH_URL}/{index}/_search?search_pipeline={name}-rewrite", json=unknown)
            assert answer.status_code == 200  # fallback: the service answers the original query
        finally:
            installer.uninstall(name, index_template=False)
            httpx.delete(f"{OPENSEARCH_URL}/{index}")
            installer.close()


class TestElasticsearchConformance(AdapterConformance):
    """The shared adapter checks on a live Elasticsearch (skipped without one)."""

    @pytest.fixture
    def make_adapter(self, es_index):
        from elasticsearch import Elasticsearch

        from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

        self.index = es_index
        client = Elasticsearch(ES_URL)
        return lambda rewriter: RewritingElasticsearch(client, rewriter, scoring="bm25q")

    def search(self, adapter, queries):
        return [ids(adapter.search(index=self.index, query={"match": {"text": q}}, size=K)) for q in queries]

    def search_batch(self, adapter, queries):
        searches = []
        for query in queries:
            searches += [{"index": self.index}, {"query": {"match": {"text": query}}, "size": K}]
        return [ids(response) for response in adapter.msearch(searches=searches)["responses"]]

    def last_rewrites(self, adapter):
        return adapter.last_rewrites
