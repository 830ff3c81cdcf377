"""What anytime rewriting adds to a search, against a rewriter made slow on purpose.

The Elasticsearch client stage with ``fusion="rrf", budget=B`` searches the original at once and
waits for the rewrite at most ``B`` seconds; the promise is that a search never takes longer
than the budget plus one search, whatever the model does. Each row runs the same searches on a
real node (``$TSQR_ES_URL``, e.g. from ``make engines``) with a rewriter whose every call sleeps a
drawn time, and prints p50/p99 of the whole call, the p99 of a plain search with the original
query (the "one search" of the bound), and the share of searches that got the fused answer.

    python benchmarks/anytime_latency.py [--searches 200] [--budget 0.5]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
import uuid

from tsqr_plugins import Rewriter
from tsqr_plugins.backends.base import Backend, Completion
from tsqr_plugins.search.bulk import BulkIndexer
from tsqr_plugins.testing.conformance import CORPUS, QUERY, REWRITE


class DrawnDelay(Backend):
    """Answers QUERY's rewrite after a delay drawn from ``delays`` (seconds), a seeded draw."""

    NAME = "drawn-delay"
    model_id = "drawn-delay"

    def __init__(self, delays: list[float], seed: int) -> None:
        self.delays, self.rng = delays, random.Random(seed)

    def generate(self, queries, prompt, params):
        time.sleep(self.rng.choice(self.delays))
        return [Completion(text=f"<think>x</think><answer>{REWRITE}</answer>") for _ in queries]


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--budget", type=float, default=0.5)
    args = parser.parse_args()
    from elasticsearch import Elasticsearch

    from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch

    url = os.environ.get("TSQR_ES_URL") or "http://127.0.0.1:9211"
    index = f"tsqr-anytime-{uuid.uuid4().hex[:6]}"
    indexer = BulkIndexer(url)
    indexer.create_index(index)
    indexer.index(index, list(CORPUS), list(CORPUS.values()), progress=False)
    client = Elasticsearch(url)
    body = {"query": {"match": {"text": QUERY}}, "size": 10}
    plain = []
    for _ in range(args.searches):
        started = time.perf_counter()
        client.search(index=index, **body)
        plain.append(time.perf_counter() - started)
    one_search = p(plain, 0.99)
    rows = [("instant rewriter", [0.0]), ("rewriter 0.1-0.4 s", [0.1, 0.2, 0.3, 0.4]),
            ("rewriter 0.3-3 s", [0.3, 0.6, 1.0, 2.0, 3.0]), ("rewriter always 5 s", [5.0])]
    print(f"# anytime rewriting, Elasticsearch {os.environ.get('TSQR_ES_VERSION', '?')}, budget {args.budget:g} s, "
          f"{args.searches} searches per row, {platform.machine()}, {time.strftime('%Y-%m-%d')}")
    print(f"# plain search with the original: p50 {p(plain, 0.5):.1f} ms, p99 {one_search:.1f} ms")
    print(f"{'rewriter':<24}{'p50 ms':>10}{'p99 ms':>10}{'bound ms':>10}{'fused':>8}{'within':>8}")
    for name, delays in rows:
        searches = args.searches if max(delays) < 2 else max(10, args.searches // 10)  # slow rows: fewer
        stage = RewritingElasticsearch(client, Rewriter(DrawnDelay(delays, seed=20261205), prompt="tsqr-think-v1",
                                                        params="greedy"),
                                       fusion="rrf", budget=args.budget)
        times, fused = [], 0
        for _ in range(searches):
            started = time.perf_counter()
            answer = stage.search(index=index, **body)
            times.append(time.perf_counter() - started)
            fused += bool(answer["tsqr"].get("fused"))
        bound = args.budget * 1000 + one_search
        within = sum(t * 1000 <= bound for t in times) / len(times)
        print(f"{name:<24}{p(times, 0.5):>10.1f}{p(times, 0.99):>10.1f}{bound:>10.1f}"
              f"{fused / len(times):>8.0%}{within:>8.0%}")
    client.indices.delete(index=index)
    indexer.close()
    print(f"# mean plain search {statistics.mean(plain) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
