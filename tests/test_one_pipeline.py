"""One fail-open path: the same engine failures fed to ``Rewriter`` (which the adapters, the client
stages and the proxy use) and to ``tsqr serve`` give the same rewrite fields. Before, the service
re-did the Rewriter's parsing and fallback on plain dicts, and the copies differed (the service's
fallback had no model or prompt id; only the service refused model output holding a lone
surrogate)."""

from __future__ import annotations

import time

import httpx
import pytest

from tsqr_plugins import Rewriter
from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.errors import BackendError

QUERY = "why do moths circle street lamps?"
FIELDS = ("original", "text", "fallback", "model", "prompt_id")


class ScriptedEngine(Backend):
    """Answers every query the same way: a text, an error, a wrong count, or late."""

    NAME = "scripted"
    model_id = "scripted"

    def __init__(self, kind: str):
        self.kind = kind

    def generate(self, queries, prompt, params):
        if self.kind == "raises":
            raise RuntimeError("engine exploded")
        if self.kind == "wrong count":
            return []
        if self.kind == "late":
            time.sleep(1.5)
        texts = {"answers": "<think>moths</think><answer>transverse orientation</answer>",
                 "unparseable": "no tags at all", "empty": "", "lone surrogate": "<think>x</think><answer>\ud800</answer>",
                 "late": "<think>x</think><answer>too late</answer>"}
        return [Completion(text=texts[self.kind]) for _ in queries]


KINDS = ["answers", "raises", "wrong count", "unparseable", "empty", "lone surrogate", "late"]


@pytest.mark.parametrize("kind", KINDS)
def test_rewriter_and_service_agree_on_every_engine_failure(kind):
    pytest.importorskip("uvicorn")
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    prompt = "tsqr-think-v1"
    rewriter = Rewriter(ScriptedEngine(kind), prompt=prompt, timeout=0.5)
    local = rewriter.rewrite(QUERY)
    config = ServiceConfig(rewriter="file", rewrites="unused.json", prompt=prompt, timeout=0.5, no_cache=True)
    with RunningService(config, ScriptedEngine(kind)) as service:
        answer = httpx.post(f"{service.url}/v1/rewrite", json={"queries": [QUERY]}, timeout=30).json()["rewrites"][0]
        strict = httpx.post(f"{service.url}/v1/rewrite", json={"queries": [QUERY], "strict": True}, timeout=30)
    assert {field: answer[field] for field in FIELDS} == {field: getattr(local, field) for field in FIELDS}, kind
    assert local.fallback == (kind != "answers")
    if local.fallback:  # the same reason, by its kind
        assert answer["reason"].split(":")[0] == local.reason.split(":")[0]
        with pytest.raises(BackendError):
            Rewriter(ScriptedEngine(kind), prompt=prompt, timeout=0.5, strict=True).rewrite(QUERY)
        assert strict.status_code in (502, 504)
    else:
        assert strict.status_code == 200


def test_an_engine_refusing_the_request_is_a_caller_error_in_the_library_and_a_fallback_in_the_service():
    """An InputError from the engine (e.g. a prompt leaving no room in the model's context): the
    library's caller made it and it raises; a `tsqr serve` client is answered with the original
    query (a second review found one request's 422 failing the other callers' queries batched with
    it), and strict gets its 502."""
    from tsqr_plugins.errors import InputError
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    class Refusing(ScriptedEngine):
        def generate(self, queries, prompt, params):
            return [Completion.failed(InputError("no room in the context")) for _ in queries]

    with pytest.raises(InputError, match="no room"):
        Rewriter(Refusing("x")).rewrite(QUERY)
    config = ServiceConfig(rewriter="file", rewrites="unused.json", no_cache=True)
    with RunningService(config, Refusing("x")) as service:
        answer = httpx.post(f"{service.url}/v1/rewrite", json={"queries": [QUERY, "another caller's"]}, timeout=30)
        strict = httpx.post(f"{service.url}/v1/rewrite", json={"queries": [QUERY], "strict": True}, timeout=30)
    assert answer.status_code == 200 and all(r["fallback"] for r in answer.json()["rewrites"])
    assert "no room" in answer.json()["rewrites"][0]["reason"] and strict.status_code == 502


@pytest.mark.parametrize("kind", KINDS)
def test_the_proxy_searches_what_the_rewriter_gives_on_every_engine_failure(kind, tmp_path):
    """The proxy goes through the same Rewriter: the node receives the rewrite's text where the
    Rewriter has one, the caller's own bytes where it falls back (and the headers say which), and
    a strict proxy answers 502 instead of searching."""
    pytest.importorskip("uvicorn")
    import json

    from tests.search_server import RecordingSearchServer
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.testing.service import RunningApp

    prompt = "tsqr-think-v1"
    local = Rewriter(ScriptedEngine(kind), prompt=prompt, timeout=0.5).rewrite(QUERY)
    body = json.dumps({"query": {"match": {"text": QUERY}}}).encode()
    with RecordingSearchServer() as node:
        for strict in (False, True):
            proxy = SearchProxy(node.url, Rewriter(ScriptedEngine(kind), prompt=prompt, timeout=0.5, strict=strict))
            with RunningApp(create_proxy_app(proxy)) as running:
                answer = httpx.post(f"{running.url}/docs/_search", content=body,
                                    headers={"Content-Type": "application/json"}, timeout=30)
            if strict and local.fallback:
                assert answer.status_code == 502
            else:
                assert answer.status_code == 200
        sent = node.searches()
    if local.fallback:
        assert len(sent) == 1 and sent[0]["raw"] == body  # the strict proxy searched nothing
        assert answer.status_code == 502
    else:
        assert [s["body"]["query"]["match"]["text"]["query"] for s in sent] == [local.text, local.text]
