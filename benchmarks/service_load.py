"""64 clients against a real `tsqr serve` process, for a bounded time: the clients run here, the
service in its own process. Two engines: `file` (the shipped sample's rewrites: what the service
itself costs) and `openai` in front of an upstream that sleeps (a slow model server: queueing,
batching and 429s). Every answer is checked against its query: a mismatched or lost answer is a
failure, whatever the speed.

    python benchmarks/service_load.py [--clients 64] [--seconds 20] [--upstream-delay 0.2]

Prints, per engine: requests, requests/s, p50/p99 latency of 200s, 429s, mismatched, lost.
Exits 1 when any answer was mismatched or lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

SAMPLE = Path(__file__).resolve().parent.parent / "tsqr_plugins" / "data" / "sample" / "rewrites.json"


def sleeping_upstream(port: int, delay: float) -> None:
    """An OpenAI-compatible server answering 'rewrite of <query>' after ``delay`` seconds (run as
    its own process: `--upstream-only PORT`)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, payload):
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send({"object": "list", "data": [{"id": "sleepy", "object": "model"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(delay)
            query = body["messages"][-1]["content"].rsplit("Query: ", 1)[-1].strip()
            self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": f"rewrite of {query}"},
                                     "finish_reason": "stop"}]})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], url: str) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command[3:6]} exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"nothing answered at {url}")


async def load(url: str, queries: list[str], expected, clients: int, seconds: float) -> dict:
    latencies, counts = [], {"requests": 0, "ok": 0, "429": 0, "mismatched": 0, "lost": 0, "other": 0}
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(number: int, http: httpx.AsyncClient) -> None:
        i = number
        while time.monotonic() < stop_at:
            query = queries[i % len(queries)]
            i += clients
            counts["requests"] += 1
            began = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/rewrite", json={"queries": [query]})
            except httpx.HTTPError:
                counts["lost"] += 1
                continue
            if response.status_code == 429:
                counts["429"] += 1
                await asyncio.sleep(float(response.headers.get("retry-after", "1")) / 10)
                continue
            if response.status_code != 200:
                counts["other"] += 1
                continue
            latencies.append(time.perf_counter() - began)
            (rewrite,) = response.json()["rewrites"]
            if rewrite["original"] != query or rewrite["text"] != expected(query):
                counts["mismatched"] += 1
            else:
                counts["ok"] += 1

    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        began = time.monotonic()
        await asyncio.gather(*(client(n, http) for n in range(clients)))
        elapsed = time.monotonic() - began
    ordered = sorted(latencies) or [0.0]
    return {**counts, "rps": counts["ok"] / elapsed, "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000}


def run_engine(name: str, serve_args: list[str], queries, expected, args) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "tsqr_plugins.cli", "serve", "--port", str(port), "--no-cache", *serve_args]
    service = start(command, f"http://127.0.0.1:{port}/health")
    try:
        return asyncio.run(load(f"http://127.0.0.1:{port}", queries, expected, args.clients, args.seconds))
    finally:
        service.terminate()
        service.wait(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--upstream-delay", type=float, default=0.2, help="seconds the slow upstream sleeps per request")
    parser.add_argument("--max-queue", type=int, default=1024, help="the service's --max-queue (small: see 429s)")
    parser.add_argument("--upstream-only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.upstream_only:
        sleeping_upstream(args.upstream_only, args.upstream_delay)
        return 0

    published = json.loads(SAMPLE.read_text(encoding="utf-8"))
    rows = {"file": run_engine("file", ["--rewriter", "file", "--rewrites", str(SAMPLE)], list(published),
                               published.__getitem__, args)}
    upstream_port = free_port()
    upstream = start([sys.executable, __file__, "--upstream-only", str(upstream_port),
                      "--upstream-delay", str(args.upstream_delay)], f"http://127.0.0.1:{upstream_port}/v1/models")
    try:
        # distinct queries, so that every request reaches the sleeping upstream (nothing coalesced or cached)
        queries = [f"load query {i}" for i in range(100_000)]
        rows[f"openai, upstream sleeping {args.upstream_delay:g} s"] = run_engine(
            "openai", ["--rewriter", "openai", "--upstream", f"http://127.0.0.1:{upstream_port}/v1",
                       "--max-queue", str(args.max_queue)],
            queries, lambda query: f"rewrite of {query}", args)
    finally:
        upstream.terminate()
        upstream.wait(30)

    print(f"# tsqr serve under load: {args.clients} clients in this process, the service in its own, "
          f"{args.seconds:g} s per engine, {platform.machine()}, {time.strftime('%Y-%m-%d')}")
    print(f"{'engine':40} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'429':>6} {'mismatched':>10} {'lost':>5}")
    for name, row in rows.items():
        print(f"{name:40} {row['requests']:8d} {row['rps']:8.1f} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} "
              f"{row['429']:6d} {row['mismatched']:10d} {row['lost']:5d}")
    bad = sum(row["mismatched"] + row["lost"] + row["other"] for row in rows.values())
    print(f"mismatched, lost or failed answers: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
