"""The resource-exhaustion tier (issue 21): clients that never read, bodies that trickle, and
connections by the hundred, against `tsqr proxy` and `tsqr serve` on loopback. Each scenario is
bounded (a few hundred sockets, seconds) and stops by itself; a probe request keeps answering
within a stated bound while it runs."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.big_answer_server import BigAnswerServer
from tests.conftest import REPO
from tests.test_serve_process import wait_until_up
from tsqr_plugins.testing.service import RunningApp, free_port

pytest.importorskip("uvicorn", reason="the proxy and the service need the 'serve' extra")

SEED = int(os.environ.get("TSQR_EXHAUSTION_SEED", "20261205"))


def open_socket(url: str) -> socket.socket:
    """A client socket with a small receive buffer (so that an unread answer stays on the server)."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    client.settimeout(10)
    return client


def never_reads(url: str, path: str = "/big") -> socket.socket:
    client = open_socket(url)
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return client


def trickles_a_body(url: str) -> socket.socket:
    client = open_socket(url)
    client.sendall(b"PUT /_bulk HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                   b"Content-Length: 1000\r\n\r\n{\"index\"")
    return client


def timed(call):
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def proxy_app(node_url: str, read_timeout: float = 1.5, node_timeout: float = 30.0):
    from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app

    return create_proxy_app(SearchProxy(node_url, None, timeout=node_timeout, read_timeout=read_timeout))


@pytest.mark.parametrize("stall", [never_reads, trickles_a_body])
def test_a_hundred_stalled_clients_do_not_stop_the_proxy(stall):
    """110 clients that never read an 8 MiB answer, or that stop sending a _bulk body, each held a
    connection to the node; with the pool (100) used up every other request waited the whole
    --search-node-timeout for a misleading 504. Now a stalled client is cut after --write-timeout or
    --read-timeout (1.5 s here) and its node connection released: a probe answers within that."""
    with BigAnswerServer() as node, RunningApp(proxy_app(node.url), write_timeout=1.5) as running:
        clients = [stall(running.url) for _ in range(110)]
        try:
            answer, seconds = timed(lambda: httpx.get(running.url + "/_cluster/health", timeout=30))
            assert answer.status_code == 200 and seconds < 10, (answer.status_code, answer.text, seconds)
            deadline = time.monotonic() + 15
            while node.open_connections > 5:  # every stalled client cut, its node connection closed
                assert time.monotonic() < deadline, f"{node.open_connections} node connections still held"
                time.sleep(0.2)
        finally:
            for client in clients:
                client.close()


def test_a_used_up_pool_says_so(monkeypatch):
    """With every node connection held (here by clients that do not read, under a long write
    timeout), a request waited --search-node-timeout and was told the node did not answer (504). It
    now gets 503 saying the connections stayed busy."""
    from tsqr_plugins.adapters import proxy

    monkeypatch.setattr(proxy, "NODE_CONNECTIONS", 4)
    with BigAnswerServer() as node, RunningApp(proxy_app(node.url, node_timeout=1.0), write_timeout=60) as running:
        clients = [never_reads(running.url) for _ in range(4)]
        time.sleep(0.5)
        answer = httpx.get(running.url + "/_cluster/health", timeout=30)
        for client in clients:
            client.close()
    assert answer.status_code == 503 and "4 connections" in answer.json()["error"], answer.text


def test_a_trickling_body_is_answered_408_and_closed():
    with BigAnswerServer() as node, RunningApp(proxy_app(node.url, read_timeout=1.0)) as running:
        client = trickles_a_body(running.url)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        client.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer.lower(), answer[:300]


def cut_off(client: socket.socket) -> bool:
    """Whether the server gave up on an answer: the connection ended before its Content-Length
    (what the kernel had already queued still arrives; the rest was dropped with the connection)."""
    client.settimeout(10)
    data = b""
    try:
        while chunk := client.recv(1 << 20):
            data += chunk
    except ConnectionResetError:
        return True
    except socket.timeout:  # the connection stayed open
        return False
    head, _, body = data.partition(b"\r\n\r\n")
    declared = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    return len(body) < declared


def test_tsqr_serve_cuts_clients_that_leave_large_answers_unread(tmp_path):
    """20 clients asking for 3.8 MB concat answers and never reading pinned them (53 MB in the
    send queues, the connections kept for ever: close() waits for the client). With
    --write-timeout 2 each such connection is aborted 2 s after the client stopped taking bytes;
    /health answers at once throughout."""
    queries = [f"q{i} " + "moths circle lamps " * 150 for i in range(150)]
    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(json.dumps({query: "transverse orientation of night flying insects " * 200
                                    for query in queries}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tsqr_plugins.cli", "serve", "--rewriter", "file", "--rewrites", str(rewrites),
             "--port", str(port), "--no-cache", "--write-timeout", "2"], stderr=stderr, cwd=REPO)
    try:
        wait_until_up(url + "/health", process, 60, log=log)
        body = json.dumps({"queries": queries, "mode": "concat"}).encode()
        clients = []
        for _ in range(20):
            client = open_socket(url)
            client.sendall(b"POST /v1/rewrite HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            clients.append(client)
        for _ in range(3):
            answer, seconds = timed(lambda: httpx.get(url + "/health", timeout=30))
            assert answer.status_code == 200 and seconds < 5, seconds
            time.sleep(1)
        time.sleep(2)
        assert all(cut_off(client) for client in clients), "a client that left its answer unread was not cut off"
        assert httpx.post(url + "/v1/rewrite", content=body, timeout=60).status_code == 200  # a reader still gets it
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_past_max_connections_requests_get_503_at_once(tmp_path):
    from tests.test_service import engine_config
    from tsqr_plugins.testing.service import RunningService

    with RunningService(engine_config(tmp_path, max_connections=8, read_timeout=3.0)) as running:
        stalled = []
        for _ in range(8):  # bodies that stop coming: each holds its connection until the read timeout
            client = open_socket(running.url)
            client.sendall(b"POST /v1/rewrite HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            stalled.append(client)
        time.sleep(0.3)
        answer, seconds = timed(lambda: httpx.get(running.url + "/health", timeout=30))
        assert answer.status_code == 503 and seconds < 2, (answer.status_code, seconds)
        time.sleep(4)  # the stalled bodies are answered 408 and their connections end
        assert httpx.get(running.url + "/health", timeout=30).status_code == 200
        for client in stalled:
            client.close()


BEHAVIOURS = ("never_reads", "trickles_a_body", "slow_headers", "leaves_mid_body", "searches")


def test_generated_crowds_of_hostile_clients_leave_the_proxy_answering():
    """Seeded crowds (TSQR_EXHAUSTION_SEED; 3 rounds of 150 clients) mixing clients that never read,
    trickle a body, send headers a byte at a time, leave mid-body, or search normally, against one
    proxy. Invariants: a probe search answers 200 within the timeouts (1.5 s) plus 8 s throughout,
    and once the crowd is gone no node connection stays held."""
    rng = random.Random(SEED)
    with BigAnswerServer() as node, RunningApp(proxy_app(node.url), write_timeout=1.5) as running:
        for round_ in range(3):
            crowd = [rng.choice(BEHAVIOURS) for _ in range(150)]
            sockets = []
            try:
                for behaviour in crowd:
                    if behaviour == "never_reads":
                        sockets.append(never_reads(running.url))
                    elif behaviour == "trickles_a_body":
                        sockets.append(trickles_a_body(running.url))
                    elif behaviour == "slow_headers":
                        client = open_socket(running.url)
                        client.sendall(b"GET /_cluster/he")
                        sockets.append(client)
                    elif behaviour == "leaves_mid_body":
                        client = open_socket(running.url)
                        client.sendall(b"POST /docs/_doc HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
                        client.close()
                    else:
                        sockets.append(never_reads(running.url, "/docs/_search"))
                for _ in range(3):
                    answer, seconds = timed(lambda: httpx.post(running.url + "/docs/_search",
                                                               json={"query": {"match_all": {}}}, timeout=30))
                    assert answer.status_code == 200 and seconds < 9.5, \
                        f"seed {SEED} round {round_}: {answer.status_code} after {seconds:.1f} s ({crowd.count('never_reads')} non-readers)"
                    time.sleep(0.5)
            finally:
                for client in sockets:
                    client.close()
        deadline = time.monotonic() + 15
        while node.open_connections > 20:  # the pool keeps at most 20 idle ones
            assert time.monotonic() < deadline, f"seed {SEED}: {node.open_connections} node connections held"
            time.sleep(0.2)
