"""The second adversarial ring (issue 21): each defect a hostile or careless client found, with the
test that failed before its fix."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.recording_server import RecordingOpenAIServer
from tsqr_plugins.backends.base import Backend, Completion

pytest.importorskip("uvicorn")


def test_the_services_own_key_never_goes_upstream(monkeypatch):
    """With TSQR_API_KEY set (the key clients must show tsqr serve) and --rewriter openai, the upstream
    received `Authorization: Bearer <that key>`: the openai backend read the variable itself. The
    upstream now gets its own key (--upstream-api-key / TSQR_UPSTREAM_API_KEY) or none."""
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    monkeypatch.setenv("TSQR_API_KEY", "the-services-own-secret")
    monkeypatch.delenv("TSQR_UPSTREAM_API_KEY", raising=False)
    with RecordingOpenAIServer() as upstream:
        with RunningService(ServiceConfig(rewriter="openai", upstream=[upstream.base_url], no_cache=True)) as service:
            answer = httpx.post(f"{service.url}/v1/rewrite", json={"queries": ["moths"]},
                                headers={"Authorization": "Bearer the-services-own-secret"}, timeout=30)
        assert answer.status_code == 200 and not answer.json()["rewrites"][0]["fallback"]
        assert upstream.authorizations and set(upstream.authorizations) == {None}
    with RecordingOpenAIServer(api_key="upstream-key") as upstream:
        config = ServiceConfig(rewriter="openai", upstream=[upstream.base_url, upstream.base_url + "/"],
                               upstream_api_key="upstream-key", no_cache=True)
        with RunningService(config) as service:  # one replica or several: the same rule
            answer = httpx.post(f"{service.url}/v1/rewrite", json={"queries": ["moths"]},
                                headers={"Authorization": "Bearer the-services-own-secret"}, timeout=30)
        assert answer.status_code == 200 and not answer.json()["rewrites"][0]["fallback"]
        assert set(upstream.authorizations) == {"Bearer upstream-key"}


@pytest.mark.parametrize("folder", ["bio#logy", "bio?x=1", "a b", "bio,x", "x:y"])
def test_tsqr_index_refuses_names_that_would_address_another_index(folder, tmp_path, capsys):
    """A dataset folder named with # or ? made --recreate delete and recreate *another* index
    (DELETE /tsqr-bio) or add a query string. Names are checked with the engines' own rules
    before any request; nothing reaches the node."""
    from tests.search_server import RecordingSearchServer
    from tsqr_plugins.cli import main

    dataset = tmp_path / folder
    dataset.mkdir()
    (dataset / "corpus.jsonl").write_text('{"_id": "d1", "text": "moths"}\n')
    (dataset / "queries.jsonl").write_text('{"_id": "q1", "text": "moths"}\n')
    (dataset / "qrels").mkdir()
    (dataset / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with RecordingSearchServer() as node:
        code = main(["index", "--engine", "elasticsearch", "--dataset", str(dataset), "--url", node.url,
                     "--recreate", "--quiet"])
        assert code == 2 and "index name" in capsys.readouterr().err
        assert node.requests == []


@pytest.mark.parametrize("path", ["/../_cluster/settings", "/docs/./_search", "/docs/%2e%2e/_cluster/settings",
                                  "/docs/%2E/_search", "/a/b/../../_search"])
def test_the_proxy_relays_no_dot_segments(path, tmp_path):
    """With an upstream path prefix, /../_cluster/settings reached the upstream out of the prefix;
    /docs/./_search went through unrewritten (the engine resolves it to a search). Refused now."""
    import socket

    from tests.search_server import RecordingSearchServer
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.testing.conformance import file_rewriter
    from tsqr_plugins.testing.service import RunningApp

    with RecordingSearchServer() as node:
        proxy = SearchProxy(f"{node.url}/prefix", file_rewriter(tmp_path))
        with RunningApp(create_proxy_app(proxy)) as running:
            with socket.create_connection(("127.0.0.1", running.port)) as raw:  # the path exactly as written
                raw.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                answer = b""
                while chunk := raw.recv(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 400") and b"segments" in answer, answer[:200]
        assert node.requests == []


def test_training_data_from_jsonl_keeps_the_query_limit_and_names_bad_lines(tmp_path, caplog):
    """`tsqr train data --from-jsonl` ignored --max-query-chars (kept a 1M-character query), and an
    array row or deep JSON was a traceback."""
    from tsqr_plugins.errors import InputError
    from tsqr_plugins.training.data import read_user_jsonl

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"query": "moths?", "positives": ["d"]}\n' + '{"query": "' + "x" * 1_000_000 + '", "positives": ["d"]}\n')
    examples = read_user_jsonl(rows, max_query_chars=16000)
    assert [e.query for e in examples] == ["moths?"] and "1 queries longer than 16000" in caplog.text
    for bad, message in (('["a"]\n', "JSON object"), ("[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
                         ('{"positives": ["d"]}\n', "'query'")):
        rows.write_text(bad)
        with pytest.raises(InputError, match=message):
            read_user_jsonl(rows, 16000)


def beir(folder, corpus: str, queries: str, qrels: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text(corpus)
    (folder / "queries.jsonl").write_text(queries)
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text(qrels)
    return folder


def test_tsqr_eval_loses_no_judgement_and_refuses_duplicates(tmp_path):
    """A qrels file whose first line is a judgement lost it to header detection; duplicate ids were
    accepted (the last won). Now a header is only a header, and duplicates name file:line."""
    from tsqr_plugins.errors import InputError
    from tsqr_plugins.eval.datasets import load_tasks

    corpus = '{"_id": "d1", "text": "moths"}\n{"_id": "d2", "text": "lamps"}\n'
    queries = '{"_id": "q1", "text": "moths?"}\n{"_id": "q2", "text": "lamps?"}\n'
    task, = load_tasks(str(beir(tmp_path / "a", corpus, queries, "q1\td1\t1.0\nq2\td2\t2\n")))
    assert task.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}  # the first line was dropped as a "header"
    task, = load_tasks(str(beir(tmp_path / "b", corpus, queries, "query-id\tcorpus-id\tscore\nq1\td1\t1\n")))
    assert task.qrels == {"q1": {"d1": 1}}
    for name, files, message in (
        ("c", (corpus + '{"_id": "d1", "text": "again"}\n', queries, "q1\td1\t1\n"), "corpus.jsonl:3: document id 'd1'"),
        ("d", (corpus, queries + '{"_id": "q1", "text": "again"}\n', "q1\td1\t1\n"), "queries.jsonl:3: query id 'q1'"),
        ("e", (corpus, queries, "q1\td1\t1\nq1\td1\t0\n"), "test.tsv:2: query 'q1' and document 'd1' are judged twice"),
        ("f", ('["d1", "moths"]\n', queries, "q1\td1\t1\n"), "corpus.jsonl:1: a line must be a JSON object"),
        ("g", ('{"text": "moths"}\n', queries, "q1\td1\t1\n"), "corpus.jsonl:1: every document needs an '_id'"),
        ("h", ('{"_id": "d1", "text": 5}\n', queries, "q1\td1\t1\n"), "corpus.jsonl:1: 'title' and 'text' must be strings"),
        ("i", ("[" * 100_000 + "]" * 100_000 + "\n", queries, "q1\td1\t1\n"), "corpus.jsonl:1: JSON nested too deeply"),
        ("j", (corpus, queries, "q1\td1\tgood\n"), "test.tsv:1: expected query-id, corpus-id and an integer score"),
    ):
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_tasks(str(beir(tmp_path / name, *files)))


def test_the_proxy_relays_non_ascii_header_values_as_they_came(tmp_path):
    """`X-User: José` in Latin-1 bytes from a client, `€` in UTF-8 from the upstream: a 500 after the
    upstream had executed the request. RFC 9110 obs-text is relayed byte for byte, both ways."""
    import socket
    from http.server import BaseHTTPRequestHandler

    from tests.background_server import BackgroundServer
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.testing.conformance import file_rewriter
    from tsqr_plugins.testing.service import RunningApp

    seen = []

    class Node(BackgroundServer):
        def _handler(self):
            class Handler(BaseHTTPRequestHandler):
                def log_message(self, *args):
                    pass

                def do_GET(self):
                    seen.append(self.headers.get("X-User").encode("latin-1"))  # http.server reads Latin-1
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")

                def send_header(self, keyword, value):
                    if keyword == "Content-Length":  # one field in UTF-8 bytes beside it
                        self._headers_buffer.append("X-Price: ".encode() + "5 €".encode("utf-8") + b"\r\n")
                    super().send_header(keyword, value)
            return Handler

    with Node() as node, RunningApp(create_proxy_app(SearchProxy(node.url, file_rewriter(tmp_path)))) as running:
        with socket.create_connection(("127.0.0.1", running.port)) as raw:
            raw.sendall(b"GET /docs/_doc/1 HTTP/1.1\r\nHost: x\r\nX-User: Jos\xe9\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert seen == [b"Jos\xe9"] and "X-Price: 5 €".encode("utf-8").lower() in answer.lower()


@pytest.mark.parametrize("server", ["serve", "proxy"])
def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(server, tmp_path):
    """Both fields on one request: the chunked body was taken, the connection kept, and the bytes
    after the body answered as a second request (smuggling). RFC 9112: refused, and closed."""
    import socket

    from tests.search_server import RecordingSearchServer
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.service import ServiceConfig, create_app
    from tests.conftest import SAMPLE
    from tsqr_plugins.testing.conformance import file_rewriter
    from tsqr_plugins.testing.service import RunningApp

    node = RecordingSearchServer()
    app = (create_app(ServiceConfig(rewriter="file", rewrites=str(SAMPLE / "rewrites.json"), no_cache=True))
           if server == "serve"
           else create_proxy_app(SearchProxy(node.url, file_rewriter(tmp_path))))
    smuggled = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b'{"queries": ["q"]}'
    request = (b"POST /v1/rewrite HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
               + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" + smuggled)
    with node, RunningApp(app) as running, socket.create_connection(("127.0.0.1", running.port)) as raw:
        raw.settimeout(10)
        raw.sendall(request)
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1 ") == 1, answer[:500]
    assert node.requests == []


def test_a_request_refused_with_429_leaves_nothing_queued():
    """A request whose queries did not all fit got 429, but the ones before the limit stayed queued
    and were generated for nobody (tsqr_expired_total stayed 0). Admission is all or nothing."""
    import asyncio

    from tsqr_plugins.params import GenerationParams
    from tsqr_plugins.prompts import get_prompt
    from tsqr_plugins.service.batcher import MicroBatcher, QueueFull
    from tsqr_plugins.service.metrics import Metrics

    async def scenario():
        batcher = MicroBatcher(backend=None, cache=None, metrics=Metrics(), max_batch_size=1, max_wait=0,
                               max_queue=3, concurrent_batches=1)
        prompt, params = get_prompt("tsqr-v1"), GenerationParams.preset("paper")
        batcher.submit_all({"a": ("a", prompt, params), "b": ("b", prompt, params)})
        with pytest.raises(QueueFull):
            batcher.submit_all({"c": ("c", prompt, params), "d": ("d", prompt, params)})
        assert batcher.depth == 2  # nothing of the refused request
        batcher.submit_all({"a": ("a", prompt, params), "c": ("c", prompt, params)})  # a joins: one new query fits
        assert batcher.depth == 3

    asyncio.run(scenario())


def test_the_proxys_rewrite_budget_counts_the_wait_for_a_worker_thread(tmp_path):
    """40 searches at once, 3 s rewrites, --timeout 10: they ran a few at a time on the worker
    threads and most took over 10 s, none falling back. The budget now starts when the search
    arrives: every one answers within it, falling back when its rewrite cannot make it."""
    import asyncio
    import time

    from tests.search_server import RecordingSearchServer
    from tsqr_plugins import Rewriter
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.backends.base import Backend, Completion
    from tsqr_plugins.testing.service import RunningApp

    class Slow(Backend):
        NAME, model_id = "slow", "slow"

        def generate(self, queries, prompt, params):
            time.sleep(2.0)
            return [Completion(text="transverse orientation") for _ in queries]

    budget = 2.5
    rewriter = Rewriter(Slow(), timeout=budget)

    async def searches(url):
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(i):
                started = time.monotonic()
                answer = await client.post(f"{url}/docs/_search", json={"query": {"match": {"text": f"moths {i}"}}})
                return answer, time.monotonic() - started
            return await asyncio.gather(*(one(i) for i in range(40)))

    with RecordingSearchServer() as node, RunningApp(create_proxy_app(SearchProxy(node.url, rewriter))) as running:
        results = asyncio.run(searches(running.url))
    assert all(answer.status_code == 200 for answer, _ in results), [(a.status_code, a.text[:200]) for a, _ in results if a.status_code != 200]
    slowest = max(seconds for _, seconds in results)
    # before: 40 searches on a few worker threads, two seconds each (over 12 s here); the bound is
    # loose for a loaded machine, far below that
    assert slowest < 2 * budget, slowest
    assert any(answer.headers["X-Tsqr-Fallback"] != "0" for answer, _ in results)


def test_a_conversation_is_ours_only_when_it_is_exactly_our_prompt(tmp_path):
    """[user], [assistant, user], [user, system ""], [tool, user] carrying our user turn were
    answered from the cache entry of [system "", user] with no upstream call, and the released think
    system prompt with the paper's user turn reached the engine re-templated ("Query:q"). Now only
    the exact conversation one of our prompts builds shares the cache; any other goes as sent."""
    from tsqr_plugins.prompts import PROMPTS, THINK_SYSTEM_PROMPT_RELEASED
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    ours = PROMPTS["tsqr-v1"].messages("why do moths circle lamps?")
    user = ours[1]
    variants = [
        [user],
        [{"role": "assistant", "content": "earlier"}, user],
        [user, {"role": "system", "content": ""}],
        [{"role": "tool", "content": "x"}, user],
        [{"role": "system", "content": THINK_SYSTEM_PROMPT_RELEASED}, user],
    ]
    with RecordingOpenAIServer() as upstream:
        config = ServiceConfig(rewriter="openai", upstream=[upstream.base_url], cache=str(tmp_path / "c.sqlite"))
        with RunningService(config) as service:
            def chat(messages):
                answer = httpx.post(f"{service.url}/v1/chat/completions", timeout=30,
                                    json={"messages": messages, "temperature": 0})
                assert answer.status_code == 200, answer.text
            # the upstream's own model name is served (it was "v1#tiny", from the URL)
            assert "tiny" in [m["id"] for m in httpx.get(f"{service.url}/v1/models", timeout=30).json()["data"]]
            chat(ours)
            chat(ours)  # the same: answered from the cache
            assert len(upstream.requests) == 1
            for variant in variants:
                chat(variant)
                assert upstream.requests[-1]["messages"] == variant  # as sent, not from our cache entry
    assert len(upstream.requests) == 1 + len(variants)


BOM = "\ufeff".encode("utf-8")


@pytest.mark.parametrize("name, text", [
    ("queries.tsv", "1\tmoths?\n"), ("queries.txt", "moths?\n"),
    ("queries.jsonl", '{"query_id": "1", "text": "moths?"}\n'), ("queries.json", '{"query_id": "1", "text": "moths?"}\n'),
    ("queries", '{"query_id": "1", "text": "moths?"}\n'),  # no suffix: JSONL by its first line
])
def test_a_byte_order_mark_is_read_the_same_in_every_query_file_format(name, text, tmp_path):
    """A UTF-8 BOM (Notepad, Excel's "CSV UTF-8") was kept in the first query's id (TSV: '\\ufeff1')
    or text (TXT), refused as bad JSON on line 1 (JSONL, JSON), and turned a file without a suffix
    into plain text. One leading BOM is dropped in every format now. A UTF-16 or UTF-32 file (its BOM
    says so) is an error naming the file and asking for UTF-8, not a decoding error at byte 0xff."""
    from tsqr_plugins.errors import InputError
    from tsqr_plugins.queryfile import Query, read_queries

    path = tmp_path / name
    path.write_bytes(BOM + text.encode("utf-8"))
    assert read_queries(path) == [Query("1", "moths?")]
    for encoding in ("utf-16", "utf-16-be", "utf-32"):
        path.write_bytes(("\ufeff" + text).encode(encoding))
        with pytest.raises(InputError, match=rf"{path}.* is {encoding[:6].upper()} text.*save it as UTF-8"):
            read_queries(path)


def test_a_byte_order_mark_is_dropped_by_every_reader_of_user_files(tmp_path, capsys):
    """The same rule for every other file a user hands tsqr: a BEIR folder's corpus.jsonl,
    queries.jsonl and qrels/test.tsv, published rewrites (JSON and JSONL), training rows
    (--from-jsonl, a local H4 file, --reasoning), pyserini's qrels and exclusions, the service
    config and the training recipe. Before, a BOM was bad JSON on line 1, or an id '\\ufeffq1'
    (qrels: 'judges queries missing from queries.jsonl'); a UTF-16 file was a decoding traceback
    or a 'codec can't decode' message. Now the BOM is dropped and UTF-16 is named, with the file."""
    from tsqr_plugins.backends.file import load_rewrite_file
    from tsqr_plugins.cli import main
    from tsqr_plugins.errors import InputError
    from tsqr_plugins.eval.datasets import load_tasks
    from tsqr_plugins.eval.pyserini_bright import _read_qrels
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.training.data import iter_h4_rows, read_user_jsonl

    def bom(path, text):
        path.write_bytes(BOM + text.encode("utf-8"))
        return path

    def utf16(path, text):
        path.write_bytes(("\ufeff" + text).encode("utf-16"))
        return path

    corpus, queries, qrels = '{"_id": "d1", "text": "moths"}\n', '{"_id": "q1", "text": "moths?"}\n', "q1\td1\t1\n"
    folder = beir(tmp_path / "beir", corpus, queries, qrels)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        bom(folder / name, (folder / name).read_text())
    task, = load_tasks(str(folder))
    assert task.doc_ids == ["d1"] and task.query_ids == ["q1"] and task.qrels == {"q1": {"d1": 1}}
    for name, text in (("corpus.jsonl", corpus), ("queries.jsonl", queries), ("qrels/test.tsv", qrels)):
        broken = beir(tmp_path / name.replace("/", "-"), corpus, queries, qrels)
        utf16(broken / name, text)
        with pytest.raises(InputError, match=rf"{broken / name} is UTF-16 text.*save it as UTF-8"):
            load_tasks(str(broken))

    checks = [  # (file name, text, read it, what it reads)
        ("rewrites.json", '{"moths?": "moth phototaxis"}', load_rewrite_file, {"moths?": "moth phototaxis"}),
        ("rewrites.jsonl", '{"original": "moths?", "text": "moth phototaxis"}\n', load_rewrite_file,
         {"moths?": "moth phototaxis"}),
        ("rows.jsonl", '{"query": "moths?", "positives": ["d"]}\n', lambda p: [e.query for e in read_user_jsonl(p)],
         ["moths?"]),
        ("h4.jsonl", '{"qid": 1}\n', lambda p: list(iter_h4_rows(str(p))), [{"qid": 1}]),
        ("qrels.bright-x.txt", "q1 0 d1 1\n", _read_qrels, {"q1": {"d1": 1}}),
        ("serve.yaml", "max_batch_size: 3\n", lambda p: ServiceConfig.load(p, rewrites="r.json").max_batch_size, 3),
    ]
    for name, text, read, expected in checks:
        assert read(bom(tmp_path / name, text)) == expected, name
        with pytest.raises(InputError, match=rf"{tmp_path / name} is UTF-16 text.*save it as UTF-8"):
            read(utf16(tmp_path / name, text))

    reasoning = bom(tmp_path / "reasoning.json", '{"why?": "because"}')
    h4 = ["train", "data", "--h4", str(tmp_path / "no-h4-here"), "--output", str(tmp_path / "out.parquet")]
    assert main(h4 + ["--reasoning", str(reasoning)]) == 2
    assert "no H4 files" in capsys.readouterr().err  # the reasoning file was read
    assert main(h4 + ["--reasoning", str(utf16(reasoning, '{"why?": "because"}'))]) == 2
    assert f"{reasoning} is UTF-16 text" in capsys.readouterr().err

    pytest.importorskip("yaml")
    from tsqr_plugins.training.recipe import Recipe

    settings = "model: /models/qr\ndataset: d.parquet\noutput_dir: out\n"
    recipe = bom(tmp_path / "recipe.yaml", settings)
    assert Recipe.load(recipe).model == "/models/qr"
    with pytest.raises(InputError, match=rf"{recipe} is UTF-16 text.*save it as UTF-8"):
        Recipe.load(utf16(recipe, settings))


class Echo(Backend):
    """Answers 'rewritten <query>', or ``text`` when given."""

    NAME, model_id = "echo", "echo"

    def __init__(self, text=None):
        self.text = text

    def generate(self, queries, prompt, params):
        return [Completion(text=self.text or f"rewritten {query}") for query in queries]


def test_a_full_disk_is_named_and_the_rewrite_still_answered(tmp_path, caplog):
    """A store on a full disk (SQLITE_FULL; here the cache's connection capped at the file's size,
    which gives SQLite's same error) was reported as "cannot rollback - no transaction is active":
    SQLite had rolled the transaction back itself, and our ROLLBACK's error hid the cause. Through
    `with_cache` (tsqr rewrite, the proxy, the adapters) the rewrite was then lost, a fallback (or
    with strict an error). Now the error says "no space left" and names the file, what the cache
    holds is still read, and the rewrite is answered, strict or not."""
    from tsqr_plugins import Rewriter
    from tsqr_plugins.backends.cache import CachedBackend
    from tsqr_plugins.cache import RewriteCache
    from tsqr_plugins.errors import CacheError

    path = tmp_path / "c.sqlite"
    cache = RewriteCache(path, {"backend": "echo", "model": "echo"})
    cache.put_many([("small", "p", "{}", "moths", "moth phototaxis")])
    pages = cache._connection.execute("PRAGMA page_count").fetchone()[0]
    cache._connection.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
    with pytest.raises(CacheError, match=rf"no space left on the device .*{path}") as raised:
        cache.put_many([("big", "p", "{}", "lamps", "x" * 100_000)])
    assert "rollback" not in str(raised.value) and "damaged" not in str(raised.value)
    assert cache.get_many(["small", "big"]) == {"small": "moth phototaxis"}
    cache.close()

    backend = CachedBackend(Echo("x" * 100_000), path)
    pages = backend.store._connection.execute("PRAGMA page_count").fetchone()[0]
    backend.store._connection.execute(f"PRAGMA max_page_count = {pages}")
    for strict in (False, True):
        rewrite = Rewriter(backend, strict=strict).rewrite(f"lamps {strict}")
        assert not rewrite.fallback and rewrite.text == "x" * 100_000
    assert f"no space left on the device writing the rewrite cache {path}" in caplog.text
    assert "rollback" not in caplog.text


READ_ONLY_CHILD = r"""
import json, logging, sys
sys.path.insert(0, sys.argv[2])
from tsqr_plugins import Rewriter
from tsqr_plugins.backends.cache import CachedBackend
from tsqr_plugins.errors import TSQRError
from tests.adversarial.test_second_ring import Echo

logging.basicConfig(level=logging.WARNING, format="log: %(message)s")  # to stderr
try:
    backend = CachedBackend(Echo(), sys.argv[1])
except TSQRError as error:
    print(json.dumps({"error": str(error)}))
else:
    rewrites = Rewriter(backend, strict=True).rewrite_batch(["moths", "lamps"])
    backend.close()
    import httpx
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    config = ServiceConfig(engine="openai", upstream=["http://127.0.0.1:9/v1"], cache=sys.argv[1])
    with RunningService(config, Echo()) as running:  # tsqr serve on the same cache
        served = httpx.post(running.url + "/v1/rewrite", json={"queries": ["moths", "lamps"], "strict": True},
                            timeout=30).json()["rewrites"]
    print(json.dumps({"rewrites": [[r.text, r.cached, r.fallback] for r in rewrites],
                      "served": [[r["text"], r["cached"], r["fallback"]] for r in served]}))
"""


def run_without_write_override(*args):
    """READ_ONLY_CHILD in a child process; as root (whom chmod does not stop) without the
    capabilities that override file modes (setpriv), so that a read-only mode is read-only."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    command = [sys.executable, "-c", READ_ONLY_CHILD, *map(str, args), str(Path(__file__).parents[2])]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv (util-linux): chmod cannot make a folder read-only")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-linux_immutable", "--",
                   *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_a_read_only_cache_is_read_and_named_never_called_damaged(tmp_path):
    """A cache folder or file the user cannot write (a shared cache, a read-only mount) was
    "damaged or not a tsqr cache ... delete it": the service would not start, tsqr rewrite stopped,
    and the advice destroyed a good cache. Now the cache is opened to be read, with a warning that
    names the read-only folder or file; hits are answered, new rewrites answered and not stored
    (through with_cache, strict too, and by tsqr serve). A read-only folder with no cache in it is
    an error saying so, not "damaged"."""
    from tsqr_plugins import Rewriter
    from tsqr_plugins.backends.cache import CachedBackend

    folder = tmp_path / "cache"
    folder.mkdir()
    path = folder / "c.sqlite"
    with CachedBackend(Echo(), path) as backend:
        Rewriter(backend).rewrite("moths")
    expected = [["rewritten moths", True, False], ["rewritten lamps", False, False]]
    for read_only, named in ((folder, f"the cache folder {folder} is read-only"),
                             (path, f"the cache file {path} is read-only")):
        mode = read_only.stat().st_mode
        read_only.chmod(0o555 if read_only.is_dir() else 0o444)
        try:
            answer, log = run_without_write_override(path)
        finally:
            read_only.chmod(mode)
        assert answer == {"rewrites": expected, "served": expected}, log
        assert named in log and "damaged" not in log and "rollback" not in log
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o555)
    answer, log = run_without_write_override(empty / "c.sqlite")
    assert f"the cache folder {empty} is read-only" in answer["error"] and "damaged" not in answer["error"]


def raw_exchange(port: int, request: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.settimeout(20)
        raw.sendall(request)
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("target", ["/docs/_search#x", "/_cluster/health#", "/docs/_doc/a#b?q=1"])
def test_a_fragment_in_the_proxys_request_target_is_400(target, tmp_path):
    """A raw '#' in the request target (no fragment belongs there, RFC 9112 3.2) was a 500."""
    from tests.search_server import RecordingSearchServer
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.testing.conformance import file_rewriter
    from tsqr_plugins.testing.service import RunningApp

    with RecordingSearchServer() as node, RunningApp(create_proxy_app(SearchProxy(node.url, file_rewriter(tmp_path)))) as running:
        answer = raw_exchange(running.port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400") and b"#" in answer, answer[:300]
    assert node.requests == []


from tsqr_plugins.testing.conformance import QUERY  # noqa: E402  (a query the file rewriter knows)


@pytest.mark.parametrize("body, content_type", [
    # 1e400 overflows a float: it went out as Infinity, which is not JSON
    ('{"query": {"match": {"text": {"query": %s, "boost": 1e400}}}}' % json.dumps(QUERY), "application/json"),
    # duplicate keys: the engine refuses them (Jackson's strict duplicate detection); one was dropped
    ('{"query": {"match": {"text": "lamps"}}, "query": {"match": {"text": %s}}}' % json.dumps(QUERY), "application/json"),
    ('{"query": {"match": {"text": "lamps", "text": %s}}}' % json.dumps(QUERY), "application/json"),
    ('{"query": {"match": {"text": {"query": %s, "boost": NaN}}}}' % json.dumps(QUERY), "application/json"),
])
def test_the_proxy_never_reserialises_what_json_cannot_say_again(body, content_type, tmp_path):
    """A body the proxy cannot write back as the client meant it goes to the engine as it came
    (its answer is the engine's), never re-serialised into something else."""
    from tests.search_server import RecordingSearchServer
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.testing.conformance import file_rewriter
    from tsqr_plugins.testing.service import RunningApp

    with RecordingSearchServer() as node, RunningApp(create_proxy_app(SearchProxy(node.url, file_rewriter(tmp_path)))) as running:
        answer = httpx.post(f"{running.url}/docs/_search", content=body.encode(), headers={"Content-Type": content_type},
                            timeout=30)
    assert answer.status_code == 200
    assert [request["raw"] for request in node.searches()] == [body.encode()]


def test_a_utf16_search_body_goes_out_as_it_came(tmp_path):
    """A UTF-16 body with charset=utf-16 was parsed (json detects UTF-16), rewritten and sent as
    UTF-8 under the client's utf-16 Content-Type. Only UTF-8 bodies are rewritten."""
    from tests.search_server import RecordingSearchServer
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
    from tsqr_plugins.testing.conformance import file_rewriter
    from tsqr_plugins.testing.service import RunningApp

    body = json.dumps({"query": {"match": {"text": QUERY}}}).encode("utf-16")
    with RecordingSearchServer() as node, RunningApp(create_proxy_app(SearchProxy(node.url, file_rewriter(tmp_path)))) as running:
        httpx.post(f"{running.url}/docs/_search", content=body,
                   headers={"Content-Type": "application/json; charset=utf-16"}, timeout=30)
        utf8 = httpx.post(f"{running.url}/docs/_search", json={"query": {"match": {"text": QUERY}}}, timeout=30)
    sent = [request["raw"] for request in node.searches()]
    assert sent[0] == body
    assert sent[1] != json.dumps({"query": {"match": {"text": QUERY}}}).encode() and utf8.headers["X-Tsqr-Rewritten"] == "1"


@pytest.mark.parametrize("body, reason", [
    (b'{"queries": ["moths"], "queries": ["lamps"]}', "appears twice"),
    ('{"queries": ["moths"]}'.encode("utf-16"), "not UTF-8"),
])
def test_tsqr_serve_reads_json_with_the_proxys_rules(body, reason, tmp_path):
    """One reader for both servers (jsontext.loads_exactly): the service took the last of two
    'queries' keys and read UTF-16 bodies; 400 now, naming the reason."""
    from tests.test_service import engine_config
    from tsqr_plugins.testing.service import RunningService

    with RunningService(engine_config(tmp_path)) as service:
        answer = httpx.post(f"{service.url}/v1/rewrite", content=body, headers={"Content-Type": "application/json"},
                            timeout=30)
    assert answer.status_code == 400 and reason in answer.json()["error"]["message"], answer.text


def test_the_queue_gauge_returns_to_zero_when_every_queued_query_was_given_up(tmp_path):
    """Found by the stateful test (test_service_states.py): queries queued behind a busy engine whose
    requests all timed out were dropped when the engine came free, but tsqr_queue_depth kept the count
    from before (4 for ever on an idle service, /health saying 0): the batcher set the gauge only when
    it formed a batch, and a queue of given-up queries forms none."""
    import threading
    import time

    from tests.test_service import CountingEngine, engine_config, metric
    from tsqr_plugins.testing.service import RunningService

    hold = threading.Event()
    engine = CountingEngine(hold=hold)
    config = engine_config(tmp_path, timeout=0.5, max_batch_size=1, concurrent_batches=1)
    with RunningService(config, engine) as running:
        first = threading.Thread(target=lambda: httpx.post(f"{running.url}/v1/rewrite", json={"queries": ["running"]},
                                                           timeout=30))
        first.start()
        while not engine.batches:
            time.sleep(0.01)
        given_up = httpx.post(f"{running.url}/v1/rewrite", json={"queries": ["a", "b", "c"]}, timeout=30).json()
        hold.set()
        first.join(30)
        deadline = time.monotonic() + 10
        while metric(metrics := httpx.get(f"{running.url}/metrics", timeout=30).text, "tsqr_expired_total") < 3:
            assert time.monotonic() < deadline, "the given-up queries were not dropped"
            time.sleep(0.01)
        depth = metric(metrics, "tsqr_queue_depth")
        health = httpx.get(f"{running.url}/health", timeout=30).json()["queue_depth"]
    assert all(r["fallback"] and "time budget" in r["reason"] for r in given_up["rewrites"])
    assert engine.batches == [["running"]]  # the given-up queries were never generated
    assert (depth, health) == (0, 0)


@pytest.mark.parametrize("garbage", ["", "   ", "<think>x</think> no answer tags", "<think>x</think><answer>\ud800</answer>"])
def test_a_completion_that_is_no_rewrite_is_not_cached(garbage, tmp_path):
    """Found by the stateful test (test_service_states.py): an upstream's empty completion was stored
    in the rewrite cache like a rewrite, so once the upstream answered again that query still fell
    back (cached: true), a strict request for it failed with 502, and the upstream was never asked
    again. Only a completion the prompt parses to text is stored, by tsqr serve and CachedBackend."""
    from tsqr_plugins import Rewriter
    from tsqr_plugins.backends.cache import CachedBackend
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    reply = {"text": garbage}
    with RecordingOpenAIServer(answer=lambda body: reply["text"]) as upstream:
        config = ServiceConfig(rewriter="openai", upstream=[upstream.base_url], prompt="tsqr-think-v1",
                               cache=str(tmp_path / "service.sqlite"))
        with RunningService(config) as service:
            ask = lambda strict: httpx.post(f"{service.url}/v1/rewrite", json={"queries": ["moths"], "strict": strict},
                                            timeout=30)
            first = ask(False).json()["rewrites"][0]
            reply["text"] = "<think>moths</think><answer>transverse orientation</answer>"
            strict, again = ask(True), ask(False).json()["rewrites"][0]
        assert first["fallback"] and strict.status_code == 200, strict.text
        assert strict.json()["rewrites"][0]["text"] == "transverse orientation" and not again["fallback"]
        assert len(upstream.requests) == 2  # the garbage, then one rewrite (cached for the third request)

    class Scripted(Backend):
        NAME, model_id = "scripted", "scripted"

        def generate(self, queries, prompt, params):
            return [Completion(text=reply["text"]) for _ in queries]

    reply["text"] = garbage
    backend = CachedBackend(Scripted(), tmp_path / "library.sqlite")
    assert Rewriter(backend, prompt="tsqr-think-v1").rewrite("moths").fallback
    reply["text"] = "<think>moths</think><answer>transverse orientation</answer>"
    assert Rewriter(backend, prompt="tsqr-think-v1").rewrite("moths").text == "transverse orientation"
    backend.close()


def test_one_completion_sqlite_cannot_store_leaves_the_rest_of_its_batch_cached(tmp_path):
    """A lone surrogate in one raw completion (a JSON "\\ud800" from an upstream; outside the answer
    it still parses) made SQLite refuse the whole batch's cache write: its other rewrites were
    generated again on every request. That completion alone is left out now."""
    from tsqr_plugins.backends.cache import CachedBackend
    from tsqr_plugins.prompts import get_prompt
    from tsqr_plugins.params import GenerationParams

    class Scripted(Backend):
        NAME, model_id = "scripted", "scripted"
        calls: list = []

        def generate(self, queries, prompt, params):
            self.calls.append(list(queries))
            thoughts = {"odd": "\ud800"}  # a lone surrogate: valid in JSON, not text
            return [Completion(text=f"<think>{thoughts.get(q, q)}</think><answer>{q}</answer>") for q in queries]

    backend = CachedBackend(Scripted(), tmp_path / "c.sqlite")
    prompt, params = get_prompt("tsqr-think-v1"), GenerationParams()
    first = backend.generate(["moths", "odd"], prompt, params)
    again = backend.generate(["moths", "odd"], prompt, params)
    backend.close()
    assert [c.text.endswith("<answer>moths</answer>") for c in first] == [True, False]
    assert [c.cached for c in again] == [True, False] and Scripted.calls == [["moths", "odd"], ["odd"]]
