"""Latency the rewrite service adds over calling the same engine in-process.

The engine answers instantly (a dictionary lookup), so what is measured is the service: HTTP,
JSON, batching, cache. Prints p50/p99 in ms and the added latency at 1 and 64 concurrent clients,
and the latency of a cache hit.

    python benchmarks/service_overhead.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tsqr_plugins import Rewriter
from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.service import ServiceConfig
from tsqr_plugins.testing.service import RunningService


class InstantEngine(Backend):
    NAME = "instant"
    model_id = "instant"

    def generate(self, queries, prompt, params):
        return [Completion(text=f"rewrite of {q}") for q in queries]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


def in_process(count: int) -> list[float]:
    rewriter = Rewriter(InstantEngine())
    samples = []
    for i in range(count):
        start = time.perf_counter()
        rewriter.rewrite(f"in-process query {i}")
        samples.append(time.perf_counter() - start)
    return samples


async def http_floor(url: str, count: int) -> list[float]:
    """The same client and server doing no work (GET /health): what HTTP itself costs here."""
    samples = []
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(count):
            start = time.perf_counter()
            await http.get(url + "/health")
            samples.append(time.perf_counter() - start)
    return samples


async def lean_client(url: str, count: int, path: str, body: bytes | None) -> list[float]:
    """One keep-alive connection written and read with asyncio streams: the round trip with as
    little client-side Python as possible (httpx itself costs about a millisecond here)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    method = "POST" if body is not None else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    request = (head + f"Content-Length: {len(body or b'')}\r\n\r\n").encode() + (body or b"")
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        writer.write(request)
        headers = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in headers.split(b"\r\n") if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        samples.append(time.perf_counter() - start)
    writer.close()
    return samples


async def over_http(url: str, count: int, clients: int, prefix: str) -> list[float]:
    samples: list[float] = []

    async def client(number: int, http: httpx.AsyncClient) -> None:
        for i in range(number, count, clients):
            start = time.perf_counter()
            response = await http.post(url + "/v1/rewrite", json={"queries": [f"{prefix} {i}"]})
            samples.append(time.perf_counter() - start)
            assert response.status_code == 200

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(n, http) for n in range(clients)))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    base_p50, base_p99 = percentiles(in_process(args.requests))
    rows = [("in-process Rewriter.rewrite", base_p50, base_p99)]
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(__file__).resolve().parents[1] / "tsqr_plugins/data/sample/rewrites.json"
        config = ServiceConfig(rewriter="file", rewrites=str(sample), cache=str(Path(tmp) / "c.sqlite"), max_queue=100_000)
        with RunningService(config, InstantEngine()) as running:
            asyncio.run(over_http(running.url, 200, 1, "warm-up"))
            for clients in (1, 64):
                p50, p99 = percentiles(asyncio.run(over_http(running.url, args.requests, clients, f"miss {clients}")))
                rows.append((f"service, {clients} client(s), cache miss", p50, p99))
            p50, p99 = percentiles(asyncio.run(over_http(running.url, args.requests, 1, "miss 1")))
            rows.append(("service, 1 client, cache hit", p50, p99))
            floor_p50, floor_p99 = percentiles(asyncio.run(http_floor(running.url, args.requests)))
            rows.append(("HTTP floor: GET /health, 1 client", floor_p50, floor_p99))
            hit_body = b'{"queries": ["miss 1 0"]}'
            rows.append(("lean client, cache hit", *percentiles(asyncio.run(
                lean_client(running.url, args.requests, "/v1/rewrite", hit_body)))))
            rows.append(("lean client, GET /health", *percentiles(asyncio.run(
                lean_client(running.url, args.requests, "/health", None)))))
    print(f"# service overhead, {args.requests} requests per row, {platform.machine()}, {time.strftime('%Y-%m-%d')}")
    print(f"{'':<40} {'p50 ms':>8} {'p99 ms':>8} {'added p50 ms':>13} {'p50 ratio':>10}")
    for name, p50, p99 in rows:
        print(f"{name:<40} {p50:>8.3f} {p99:>8.3f} {p50 - base_p50:>13.3f} {p50 / base_p50:>10.1f}")
    hit = next(p50 for name, p50, _ in rows if name.endswith("cache hit"))
    print(f"cache hit over the HTTP floor: {hit - floor_p50:.3f} ms p50 ({hit / floor_p50:.2f}x the floor)")


if __name__ == "__main__":
    main()
