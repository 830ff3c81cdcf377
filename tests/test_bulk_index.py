"""`tsqr index` against a scripted HTTP server. The server is NOT Elasticsearch: it stores indexes and
documents in dicts, answers `_bulk`, `_refresh` and `_count` in the documented shapes, and refuses
requests with 429 on a script, to check retries, the final count and the errors. Live clusters are
exercised in test_search_live.py when TSQR_ES_URL / TSQR_OPENSEARCH_URL are set."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest

from tests.background_server import BackgroundServer
from tsqr_plugins import engine_configs
from tsqr_plugins.errors import InputError
from tsqr_plugins.search.bulk import BulkIndexer


class ScriptedBulkServer(BackgroundServer):
    def __init__(self, refuse_first_request=False, refuse_every_third_item=False, refuse_id=None, lose_one=False):
        self.indexes: dict[str, dict] = {}
        self.documents: dict[str, dict[str, dict]] = {}
        self.refuse_first_request = refuse_first_request
        self.refuse_every_third_item = refuse_every_third_item
        self.refuse_id = refuse_id
        self.lose_one = lose_one
        self.bulk_calls = 0
        self.seen_items: set[str] = set()
        super().__init__()

    def bulk(self, lines: list[str]):
        self.bulk_calls += 1
        if self.refuse_first_request and self.bulk_calls == 1:
            return 429, {"error": "es_rejected_execution_exception", "status": 429}
        items = []
        for action, source in zip(lines[::2], lines[1::2]):
            meta = json.loads(action)["index"]
            doc_id = meta["_id"]
            first_time = doc_id not in self.seen_items
            self.seen_items.add(doc_id)
            if doc_id == self.refuse_id:
                items.append({"index": {"_id": doc_id, "status": 400, "error": {"type": "mapper_parsing_exception"}}})
            elif self.refuse_every_third_item and first_time and len(self.seen_items) % 3 == 0:
                items.append({"index": {"_id": doc_id, "status": 429, "error": {"type": "rejected"}}})
            else:
                if not (self.lose_one and len(self.seen_items) == 1):
                    self.documents.setdefault(meta["_index"], {})[doc_id] = json.loads(source)
                items.append({"index": {"_id": doc_id, "status": 201}})
        return 200, {"errors": any(i["index"]["status"] >= 300 for i in items), "items": items}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, payload=None):
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts == ["_bulk"]:
                    return self._send(*server.bulk(raw.decode().splitlines()))
                index = parts[0]
                if len(parts) == 1:
                    if self.command == "HEAD":
                        return self._send(200 if index in server.indexes else 404)
                    if self.command == "PUT":
                        server.indexes[index] = json.loads(raw)
                        return self._send(200, {"acknowledged": True, "index": index})
                    if self.command == "DELETE":
                        server.indexes.pop(index, None)
                        server.documents.pop(index, None)
                        return self._send(200, {"acknowledged": True})
                if parts[1:] == ["_refresh"]:
                    return self._send(200, {"_shards": {"failed": 0}})
                if parts[1:] == ["_count"]:
                    return self._send(200, {"count": len(server.documents.get(index, {}))})
                return self._send(400, {"error": "unscripted"})

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        return Handler


def test_cli_indexes_every_task_with_the_shipped_settings(capsys, monkeypatch):
    from tsqr_plugins.cli import main
    from tsqr_plugins.eval.datasets import load_tasks

    monkeypatch.setattr("tsqr_plugins.search.bulk.time.sleep", lambda seconds: None)  # no real backoff here
    with ScriptedBulkServer(refuse_first_request=True, refuse_every_third_item=True) as cluster:
        argv = ["index", "--engine", "elasticsearch", "--dataset", "sample", "--url", cluster.url,
                "--batch-docs", "7", "--quiet"]
        assert main(argv) == 0
        assert cluster.bulk_calls > 1 + 198 // 7  # the refused request and items were sent again
        assert main(argv) == 2  # the indexes exist now: refused without --recreate
        assert "--recreate" in capsys.readouterr().err
        assert main(argv + ["--recreate"]) == 0
        tasks = load_tasks("sample")
        assert sorted(cluster.documents) == sorted(f"tsqr-{t.name.replace('_', '-')}" for t in tasks)
        for task in tasks:
            stored = cluster.documents[f"tsqr-{task.name.replace('_', '-')}"]
            assert stored == {d: {"id": d, "text": t} for d, t in zip(task.doc_ids, task.documents)}
        settings = cluster.indexes["tsqr-biology"]
        assert settings == engine_configs.index_template()["template"]


def test_refused_and_lost_documents_are_errors():
    with ScriptedBulkServer(refuse_id="d2") as cluster:
        indexer = BulkIndexer(cluster.url, backoff_s=0.0)
        indexer.create_index("docs")
        with pytest.raises(InputError, match="'d2' was refused"):
            indexer.index("docs", ["d1", "d2"], ["a", "b"], progress=False)
    with ScriptedBulkServer(lose_one=True) as cluster:
        indexer = BulkIndexer(cluster.url, backoff_s=0.0)
        indexer.create_index("docs")
        with pytest.raises(InputError, match="holds 1 documents after indexing 2"):
            indexer.index("docs", ["d1", "d2"], ["a", "b"], progress=False)
    with pytest.raises(InputError, match="2 document ids but 1 texts"):
        BulkIndexer("http://127.0.0.1:1").index("docs", ["a", "b"], ["x"], progress=False)
