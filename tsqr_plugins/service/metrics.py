"""Prometheus text-format metrics, kept in-process (no client library needed)."""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Counters also rendered under their old name for one release: old name -> counter.
OLD_COUNTER_NAMES = {"engine_errors": "rewriter_errors"}


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {count}' for bound, count in zip(self.buckets, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{suffix} {self.total:.6f}", f"{name}_count{suffix} {self.count}"]
        return out


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.counters = {"cache_hits": 0, "cache_misses": 0, "fallbacks": 0, "strict_failures": 0, "coalesced": 0,
                         "rewriter_errors": 0, "cache_errors": 0, "expired": 0}
        self.queue_depth = 0

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1
            self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, size: int) -> None:
        with self._lock:
            self.batch_size.observe(size)

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP tsqr_requests_total HTTP requests by endpoint and status.", "# TYPE tsqr_requests_total counter"]
            lines += [f'tsqr_requests_total{{endpoint="{e}",status="{s}"}} {n}' for (e, s), n in sorted(self.requests.items())]
            lines += ["# HELP tsqr_request_seconds Request latency.", "# TYPE tsqr_request_seconds histogram"]
            for endpoint, histogram in sorted(self.latency.items()):
                lines += histogram.lines("tsqr_request_seconds", f'endpoint="{endpoint}"')
            lines += ["# HELP tsqr_batch_size Queries per rewriter batch.", "# TYPE tsqr_batch_size histogram"]
            lines += self.batch_size.lines("tsqr_batch_size")
            for name, value in self.counters.items():
                lines += [f"# TYPE tsqr_{name}_total counter", f"tsqr_{name}_total {value}"]
            for old, name in OLD_COUNTER_NAMES.items():
                lines += [f"# HELP tsqr_{old}_total Deprecated: tsqr_{name}_total (this name goes in the next "
                          "release).", f"# TYPE tsqr_{old}_total counter", f"tsqr_{old}_total {self.counters[name]}"]
            lines += ["# HELP tsqr_queue_depth Queries waiting for the rewriter.", "# TYPE tsqr_queue_depth gauge",
                      f"tsqr_queue_depth {self.queue_depth}"]
        return "\n".join(lines) + "\n"
