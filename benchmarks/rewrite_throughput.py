"""Rewrite throughput of the backends that run on this machine, on the tiny local model.

Prints queries per second and ratios against a reference measured in the same run:
batched vs one-at-a-time generation (transformers), cache hits vs generation, file lookups.
The tiny model says nothing about a real 7B model's speed; it measures our overhead and batching.

    python benchmarks/rewrite_throughput.py [--queries 64] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from tsqr_plugins import GenerationParams, Rewriter
from tsqr_plugins.backends.cache import CachedBackend
from tsqr_plugins.backends.file import FileBackend
from tsqr_plugins.backends.transformers import TransformersBackend
from tsqr_plugins.testing import build_tiny_qwen2

PUBLISHED = Path(__file__).resolve().parents[2] / "shared/data/tongsearch-qr/TongSearch-QR-7B_reasoned_BRIGHT_queries.json"


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    queries = [f"query {i}: why do moths fly towards street lamps at night and not the moon?" for i in range(args.queries)]
    params = GenerationParams.preset("greedy", max_tokens=args.max_tokens)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_qwen2(Path(tmp) / "tiny")
        one_at_a_time = TransformersBackend(str(model), device="cpu", batch_size=1)
        batched = TransformersBackend(str(model), device="cpu", batch_size=16)
        Rewriter(batched, params=params).rewrite_batch(queries[:4])  # warm-up
        single_s = timed(lambda: Rewriter(one_at_a_time, params=params).rewrite_batch(queries))
        batch_s = timed(lambda: Rewriter(batched, params=params).rewrite_batch(queries))
        rows.append(("transformers, batch_size=1", args.queries / single_s, 1.0))
        rows.append(("transformers, batch_size=16", args.queries / batch_s, single_s / batch_s))

        cached = CachedBackend(batched, Path(tmp) / "cache.sqlite")
        fill_s = timed(lambda: Rewriter(cached, params=params).rewrite_batch(queries))
        hit_s = timed(lambda: Rewriter(cached, params=params).rewrite_batch(queries))
        rows.append(("cache miss (generate + store)", args.queries / fill_s, single_s / fill_s))
        rows.append(("cache hit", args.queries / hit_s, single_s / hit_s))

    if PUBLISHED.is_file():
        published = list(json.loads(PUBLISHED.read_text(encoding="utf-8")))
        backend = FileBackend(PUBLISHED)
        file_s = timed(lambda: Rewriter(backend).rewrite_batch(published))
        rows.append((f"file backend ({len(published)} BRIGHT queries)", len(published) / file_s, single_s / args.queries * len(published) / file_s))

    print(f"# rewrite throughput, tiny Qwen2, {args.queries} queries, max_tokens={args.max_tokens}, "
          f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}")
    print(f"{'backend':<42} {'queries/s':>12} {'× vs batch_size=1':>18}")
    for name, qps, ratio in rows:
        print(f"{name:<42} {qps:>12.1f} {ratio:>18.1f}")


if __name__ == "__main__":
    main()
