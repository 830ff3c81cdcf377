"""A real HTTP server, run inside the tests, that records every request it receives and answers the
few Elasticsearch/OpenSearch APIs the stage uses. It is NOT Elasticsearch or OpenSearch: `_search`
answers with a fixed empty hit list (the tests check what was sent), `_termvectors` answers with
term and field statistics computed from a small in-memory corpus with the embedded Lucene-English
analyzer (what the shipped index template configures), and everything else echoes the request.
It sends `X-Elastic-Product: Elasticsearch` because the official client refuses servers without it.
"""

from __future__ import annotations

import json
from collections import Counter

from tests.background_server import BackgroundServer, QuietHandler
from tsqr_plugins.analyzer import LuceneEnglishAnalyzer

SEARCH_ANSWER = {"took": 1, "timed_out": False, "hits": {"total": {"value": 0, "relation": "eq"}, "hits": []}}


class RecordingSearchServer(BackgroundServer):
    def __init__(self, corpus: dict[str, str] | None = None, field: str = "text", fail_termvectors: bool = False):
        self.analyzer = LuceneEnglishAnalyzer()
        self.field = field
        self.fail_termvectors = fail_termvectors
        self.documents = {doc_id: Counter(self.analyzer(text)) for doc_id, text in (corpus or {}).items()}
        self.requests: list[dict] = []
        super().__init__()

    def searches(self) -> list[dict]:
        return [r for r in self.requests if r["path"].split("?")[0].endswith("/_search")]

    def search_answer(self, body: dict | None) -> dict:
        """The answer to one search (``_search`` or an ``_msearch`` item): no hits; a test's
        subclass ranks."""
        return SEARCH_ANSWER

    def termvectors(self, body: dict) -> dict:
        """Term and field statistics for an artificial document, as `_termvectors` returns them."""
        vectors = {}
        for name in body.get("fields", []):
            counts = Counter(self.analyzer(body["doc"].get(name, "")))
            terms = {}
            for term, tf in counts.items():
                entry = {"term_freq": tf}
                df = sum(1 for doc in self.documents.values() if term in doc)
                if df:  # like Elasticsearch, no statistics for terms the index lacks
                    entry.update(doc_freq=df, ttf=sum(doc[term] for doc in self.documents.values()))
                terms[term] = entry
            total = sum(sum(doc.values()) for doc in self.documents.values())
            stats = {"sum_doc_freq": sum(len(doc) for doc in self.documents.values()),
                     "doc_count": len(self.documents), "sum_ttf": total}
            vectors[name] = {"field_statistics": stats, "terms": terms}
        return {"_index": "docs", "found": True, "took": 1, "term_vectors": vectors}

    def _handler(self):
        server = self

        class Handler(QuietHandler):
            def _send(self, status, payload, extra_headers=()):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Elastic-Product", "Elasticsearch")
                for name, value in extra_headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except (ValueError, RecursionError):
                    body = raw.decode("latin-1")
                record = {"method": self.command, "path": self.path,
                          "headers": {k.lower(): v for k, v in self.headers.items()},
                          "body": body, "raw": raw}
                server.requests.append(record)
                path = self.path.split("?")[0]
                if path == "/":
                    self._send(200, {"version": {"number": "9.0.0", "distribution": "recording"},
                                     "tagline": "You Know, for Search"})
                elif path.endswith("/_termvectors"):
                    if server.fail_termvectors:
                        self._send(500, {"error": "termvectors disabled in this test"})
                    else:
                        self._send(200, server.termvectors(body or {}))
                elif path.endswith("/_search"):
                    self._send(200, server.search_answer(body if isinstance(body, dict) else None))
                elif path.endswith("/_msearch"):
                    lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
                    record["ndjson"] = lines
                    self._send(200, {"took": 1, "responses": [server.search_answer(item) for item in lines[1::2]]})
                elif path.startswith("/missing"):
                    self._send(404, {"error": {"type": "index_not_found_exception"}, "status": 404},
                               [("X-Upstream", "recording")])
                else:
                    self._send(200, {"echo": {"method": self.command, "path": self.path, "body": body}},
                               [("X-Upstream", "recording")])

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        return Handler
