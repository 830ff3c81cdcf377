"""`tsqr opensearch install|uninstall` against a scripted HTTP server. The server is NOT OpenSearch:
it keeps connectors, models, pipelines and settings in dicts and answers in the shapes the
ml-commons/OpenSearch API documentation gives, so that the installer's request sequence and its
idempotency can be checked here. The same installer runs against a real cluster in
test_search_live.py when TSQR_OPENSEARCH_URL is set."""

from __future__ import annotations

import itertools
import json
from http.server import BaseHTTPRequestHandler

import pytest

from tests.background_server import BackgroundServer
from tsqr_plugins.adapters.opensearch_install import TRUSTED, OpenSearchInstaller
from tsqr_plugins.errors import InputError, ServerUnavailableError
from tsqr_plugins.testing.service import free_port


class ScriptedMLCommons(BackgroundServer):
    def __init__(self):
        self.settings = {TRUSTED: ["^https://api\\.openai\\.com/.*$"]}
        self.connectors, self.models, self.deployed = {}, {}, set()
        self.pipelines, self.templates, self.ingest = {}, {}, {}
        self.log: list[tuple[str, str]] = []
        ids = itertools.count(1)
        self.next_id = lambda prefix: f"{prefix}{next(ids)}"
        super().__init__()

    def answer(self, method: str, path: str, body):
        path = path.split("?")[0]
        parts = path.strip("/").split("/")
        if path == "/_cluster/settings":
            if method == "PUT":
                self.settings.update(body["persistent"])
                return 200, {"acknowledged": True}
            return 200, {"persistent": dict(self.settings), "transient": {}}
        if path.endswith("/_search") and "_ml" in parts:
            store = self.connectors if parts[2] == "connectors" else self.models
            if not store:
                return 404, {"error": {"type": "index_not_found_exception"}, "status": 404}
            name = body["query"]["term"]["name.keyword"]
            hits = [{"_id": i, "_source": d} for i, d in store.items() if d["name"] == name]
            return 200, {"hits": {"total": {"value": len(hits)}, "hits": hits}}
        if path == "/_plugins/_ml/connectors/_create":
            connector_id = self.next_id("c")
            self.connectors[connector_id] = body
            return 200, {"connector_id": connector_id}
        if path == "/_plugins/_ml/models/_register":
            assert body["connector_id"] in self.connectors
            model_id = self.next_id("m")
            self.models[model_id] = body
            return 200, {"task_id": self.next_id("t"), "status": "CREATED", "model_id": model_id}
        if parts[:3] == ["_plugins", "_ml", "models"] and len(parts) == 5:
            model_id, action = parts[3], parts[4]
            if model_id not in self.models:
                return 404, {"error": "model not found"}
            (self.deployed.add if action == "_deploy" else self.deployed.discard)(model_id)
            return 200, {"task_id": self.next_id("t"), "status": "COMPLETED"}
        if method == "DELETE" and parts[:2] == ["_plugins", "_ml"]:
            store = self.connectors if parts[2] == "connectors" else self.models
            if parts[2] == "models" and parts[3] in self.deployed:
                return 400, {"error": "model is deployed"}
            return (200, {"result": "deleted"}) if store.pop(parts[3], None) else (404, {"result": "not_found"})
        stores = {"_search": self.pipelines, "_index_template": self.templates, "_ingest": self.ingest}
        store = stores.get(parts[0])
        if store is not None:
            key = parts[-1]
            if method == "PUT":
                store[key] = body
                return 200, {"acknowledged": True}
            if method == "DELETE":
                return (200, {"acknowledged": True}) if store.pop(key, None) is not None else (404, {"error": "missing"})
        return 400, {"error": f"unscripted {method} {path}"}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                server.log.append((self.command, self.path))
                status, payload = server.answer(self.command, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        return Handler


def test_install_is_idempotent_and_uninstall_removes_it():
    with ScriptedMLCommons() as cluster:
        installer = OpenSearchInstaller(cluster.url)
        first = installer.install("http://127.0.0.1:8000", field="body")
        second = installer.install("http://127.0.0.1:8000", field="body")
        assert first == second  # the same connector and model, found again
        assert len(cluster.connectors) == len(cluster.models) == 1 and cluster.deployed == {first["model_id"]}
        assert cluster.settings[TRUSTED][0] == "^https://api\\.openai\\.com/.*$"  # existing trust kept
        assert len(cluster.settings[TRUSTED]) == 2  # ours added once
        assert cluster.settings["plugins.ml_commons.connector.private_ip_enabled"] is True
        rewrite = cluster.pipelines["tsqr-rewrite"]["request_processors"][0]["ml_inference"]
        assert rewrite["model_id"] == first["model_id"] and rewrite["input_map"] == [{"query": "query.match.body.query"}]
        assert set(cluster.pipelines) == {"tsqr-rewrite", "tsqr-rewrite-template"}
        assert "tsqr" in cluster.templates and "tsqr-bright" in cluster.ingest

        with pytest.raises(InputError, match="uninstall"):
            installer.install("http://127.0.0.1:9999")  # the name is taken by another service's connector

        removed = installer.uninstall()
        assert not cluster.connectors and not cluster.models and not cluster.pipelines and not cluster.templates
        assert len(removed) == 6
        assert installer.uninstall() == []  # nothing left: no error
        installer.close()


def test_install_errors_are_clear():
    with pytest.raises(ServerUnavailableError, match="unreachable"):
        OpenSearchInstaller(f"http://127.0.0.1:{free_port()}").install("http://127.0.0.1:8000")
    with ScriptedMLCommons() as cluster:
        with pytest.raises(InputError, match="http"):
            OpenSearchInstaller(cluster.url).install("127.0.0.1:8000")
        assert cluster.log == []  # refused before anything was changed


def test_cli_install_and_render(capsys, tmp_path, monkeypatch):
    from tsqr_plugins.cli import main

    monkeypatch.setenv("TSQR_API_KEY", "secret-token")
    with ScriptedMLCommons() as cluster:
        assert main(["opensearch", "install", "--url", cluster.url, "--service-url", "http://10.1.2.3:8000"]) == 0
        out = capsys.readouterr().out
        assert "model_id: m" in out and "search_pipeline=tsqr-rewrite" in out
        (connector,) = cluster.connectors.values()
        assert connector["credential"] == {"api_key": "secret-token"}
        assert main(["opensearch", "uninstall", "--url", cluster.url]) == 0
    assert main(["opensearch", "render", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "opensearch" / "connector.json").is_file()
