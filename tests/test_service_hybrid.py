"""The service's answer for the OpenSearch rrf pipeline (service/hybrid.py): the whole match query
in, a hybrid query of the original and the rewritten match out; the original alone on a fallback."""

from __future__ import annotations

import json

import httpx

from tests.conftest import SAMPLE
from tsqr_plugins.core import Rewrite
from tsqr_plugins.querydsl import rewritten_match
from tsqr_plugins.service import ServiceConfig
from tsqr_plugins.service.hybrid import hybrid_query, whole_match
from tsqr_plugins.testing.service import RunningService

REWRITES = json.loads((SAMPLE / "rewrites.json").read_text())
QUERY, REWRITE = next(iter(REWRITES.items()))


def test_whole_match_tells_a_match_query_from_its_options():
    assert whole_match({"text": {"query": "moths"}}) == ("text", {"query": "moths"})
    assert whole_match({"query": {"query": "moths"}}) == ("query", {"query": "moths"})  # a field named query
    for not_whole in ({"query": "moths"}, {"query": "moths", "boost": 2}, {"text": "moths"}, {"a": {}, "b": {}},
                      {"text": {"query": 3}}, [], "moths", None, {}):
        assert whole_match(not_whole) is None, not_whole


def test_hybrid_query_keeps_the_original_and_adds_the_rewrite():
    options = {"query": "moths", "operator": "and", "boost": 2.0}
    assert hybrid_query("text", options, None) == {"match": {"text": options}}
    assert hybrid_query("text", options, "insects") == {"hybrid": {"queries": [
        {"match": {"text": options}}, {"match": {"text": rewritten_match(options, "insects")}}]}}


def test_the_service_answers_the_hybrid_query_for_a_whole_match():
    config = ServiceConfig(rewriter="file", rewrites=str(SAMPLE / "rewrites.json"))
    options = {"query": QUERY, "operator": "and"}
    with RunningService(config) as running:
        def rewrite(body):
            response = httpx.post(running.url + "/v1/rewrite", json=body, timeout=30)
            assert response.status_code == 200, response.text
            return response.json()

        answer = rewrite({"match": {"body.en": options}, "mode": "replace"})
        assert answer["query"] == hybrid_query("body.en", options, REWRITE)
        assert answer["match"] == rewritten_match(options, REWRITE)  # the options path's answer, as before
        adaptive = rewrite({"match": {"body.en": options}, "mode": "adaptive"})
        text = Rewrite(original=QUERY, text=REWRITE).combined_text("adaptive", 5)
        assert adaptive["query"]["hybrid"]["queries"][1] == {"match": {"body.en": rewritten_match(options, text)}}
        unknown = {"query": "never published"}
        assert rewrite({"match": {"text": unknown}})["query"] == {"match": {"text": unknown}}
        assert "query" not in rewrite({"match": options})  # the write-in-place pipeline's request
        bad = httpx.post(running.url + "/v1/rewrite", json={"match": {"text": {"query": QUERY}}, "mode": "both"})
        assert bad.status_code == 400
