"""Clients that send too much, too slowly, or leave: bounded in memory and time, against the
service in-process and against a real `tsqr serve` and `tsqr proxy` process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import REPO, SAMPLE
from tests.test_serve_process import wait_until_up
from tests.test_service import engine_config, metric
from tsqr_plugins.testing.service import RunningService, free_port

pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra")


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)), timeout=15)
    return client


def read_answer(client: socket.socket) -> bytes:
    """Whatever the server sends until it closes or goes quiet (b"" when it closed without a word)."""
    data = b""
    try:
        while chunk := client.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and data.split(b"\r\n\r\n", 1)[1]:
                break
    except ConnectionResetError:
        pass
    return data


def test_a_chunked_body_is_refused_at_the_limit_not_after_reading_it_all(tmp_path):
    with RunningService(engine_config(tmp_path, max_body_bytes=64 * 1024)) as running:
        client = connect(running.url)
        client.sendall(b"POST /v1/rewrite HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 16384
        for _ in range(8):  # 128 KiB, twice the limit; then the client waits (a 300 MB body would follow)
            client.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = read_answer(client)  # before the fix: no answer until the whole body had come
        client.close()
    assert answer.startswith(b"HTTP/1.1 413") and b"larger than 65536 bytes" in answer


def test_a_body_that_stalls_gets_408_within_the_read_timeout(tmp_path):
    with RunningService(engine_config(tmp_path, read_timeout=1.0)) as running:
        client = connect(running.url)
        client.sendall(b"POST /v1/rewrite HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 100\r\n\r\n{\"queries\": [")
        answer = read_answer(client)
        client.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer


def test_a_client_leaving_mid_body_is_not_a_500(tmp_path, caplog):
    with RunningService(engine_config(tmp_path)) as running:
        client = connect(running.url)
        client.sendall(b"POST /v1/rewrite HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 1000\r\n\r\n{\"queries\": [")
        time.sleep(0.2)
        client.close()
        deadline = time.monotonic() + 10
        while 'status="499"' not in (metrics := httpx.get(running.url + "/metrics").text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
    assert 'tsqr_requests_total{endpoint="rewrite",status="499"} 1' in metrics and 'status="500"' not in metrics
    assert "unexpected error" not in caplog.text and "Traceback" not in caplog.text


def slow_headers_are_cut(url: str, read_timeout: float) -> None:
    """A client sending its headers a byte at a time is disconnected once the read timeout has
    passed; one that sends nothing after connecting likewise. Others are served meanwhile."""
    trickler, silent = connect(url), connect(url)
    request = b"POST /v1/rewrite HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    start = time.monotonic()
    closed = False
    for byte in request:
        try:
            trickler.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if time.monotonic() - start > read_timeout + 10:
            break
        time.sleep(0.05)
    if not closed:
        closed = read_answer(trickler) == b""
    assert closed, "a client trickling its headers kept the connection"
    assert read_answer(silent) == b"", "a silent client kept the connection"
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    trickler.close()
    silent.close()


def test_slow_headers_are_cut_in_a_real_tsqr_serve(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tsqr_plugins.cli", "serve", "--rewriter", "file", "--rewrites",
         str(SAMPLE / "rewrites.json"), "--port", str(port), "--read-timeout", "1", "--access-log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process, 60)
        slow_headers_are_cut(url, 1.0)
    finally:
        process.terminate()
        stdout, _ = process.communicate(timeout=30)
    assert '"GET /health HTTP/1.1" 200' in stdout  # --access-log: uvicorn's line per request, on stdout


def test_slow_headers_are_cut_in_a_real_tsqr_proxy(tmp_path):
    from tests.search_server import RecordingSearchServer

    with RecordingSearchServer() as upstream:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "tsqr_plugins.cli", "proxy", "--search-node", upstream.url, "--port", str(port),
             "--rewriter", f"file:{SAMPLE / 'rewrites.json'}", "--read-timeout", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(url + "/health", process, 60)
            slow_headers_are_cut(url, 1.0)
        finally:
            process.terminate()
            process.communicate(timeout=30)


def test_an_idle_kept_alive_connection_is_uvicorns_and_a_slow_next_request_is_cut(tmp_path):
    """Between requests the connection is governed by uvicorn's keep-alive timeout (60 s here), not
    the header deadline (a pooled client connection must not be closed under it after 1 s); the
    next request's headers, once they start, have the read timeout again."""
    with RunningService(engine_config(tmp_path, read_timeout=1.0)) as running:
        client = connect(running.url)
        request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        client.sendall(request)
        assert read_answer(client).startswith(b"HTTP/1.1 200")
        time.sleep(2.5)  # idle past the read timeout
        client.sendall(request)
        assert read_answer(client).startswith(b"HTTP/1.1 200"), "an idle kept-alive connection was closed"
        client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers that never end
        assert read_answer(client) == b"", "a stalled second request kept the connection"
        client.close()
