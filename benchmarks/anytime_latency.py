"""What anytime rewriting adds to a search, against a rewriter made slow on purpose.

The client stage (``--host client``: ``RewritingElasticsearch`` or ``RewritingOpenSearch``, as the
node is) or ``tsqr proxy`` (``--host proxy``: ``--fusion rrf --budget B``, searched over HTTP) with
``fusion="rrf", budget=B`` searches the original at once and waits for the rewrite at most ``B``
seconds; the promise is that a search never takes longer than the budget plus one search, whatever
the model does. Each row runs the same searches on a real node (``--node``, default
``$TSQR_ES_URL``, e.g. from ``make engines``) with a rewriter whose every call sleeps a drawn time,
and prints p50/p99 of the whole call, the p99 of a plain search with the original query (the
"one search" of the bound: with the client itself, or through a proxy without a rewriter), and
the share of searches that got the fused answer.

    python benchmarks/anytime_latency.py [--searches 200] [--budget 0.5] [--host proxy] [--node URL]
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


class ClientHost:
    """The client stage of the node's engine: ``search(rewriter)`` gives a function that runs one
    search and says whether it was fused; ``plain()`` one search with the client itself."""

    def __init__(self, url: str, index: str, opensearch: bool, budget: float) -> None:
        self.index, self.budget, self.opensearch = index, budget, opensearch
        if opensearch:
            from opensearchpy import OpenSearch

            self.client = OpenSearch([url])
        else:
            from elasticsearch import Elasticsearch

            self.client = Elasticsearch(url)

    def _search(self, client) -> dict:
        if self.opensearch:
            return client.search(index=self.index, body=BODY)
        return client.search(index=self.index, **BODY)

    def plain(self) -> None:
        self._search(self.client)

    def searcher(self, rewriter: Rewriter):
        if self.opensearch:
            from tsqr_plugins.adapters.opensearch import RewritingOpenSearch as Stage
        else:
            from tsqr_plugins.adapters.elasticsearch import RewritingElasticsearch as Stage
        stage = Stage(self.client, rewriter, fusion="rrf", budget=self.budget)
        return lambda: bool(self._search(stage)["tsqr"].get("fused"))

    def close(self) -> None:
        self.client.close()


class ProxyHost:
    """``tsqr proxy --fusion rrf --budget B`` in this process (uvicorn on a loopback port), searched
    over HTTP; ``plain()`` the same request through a proxy without a rewriter (one search with
    the proxy's own hop, the "one search" of the proxy's bound)."""

    def __init__(self, url: str, index: str, opensearch: bool, budget: float) -> None:
        import httpx

        from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
        from tsqr_plugins.testing.service import RunningApp

        self.url, self.index, self.budget = url, index, budget
        self.http = httpx.Client(timeout=60)
        self.relay = RunningApp(create_proxy_app(SearchProxy(url, None))).__enter__()
        self.running = None

    def plain(self) -> None:
        self.http.post(f"{self.relay.url}/{self.index}/_search", json=BODY).raise_for_status()

    def searcher(self, rewriter: Rewriter):
        from tsqr_plugins.adapters.proxy import SearchProxy, create_proxy_app
        from tsqr_plugins.adapters.stage import StageSettings
        from tsqr_plugins.testing.service import RunningApp

        if self.running is not None:
            self.running.__exit__(None, None, None)
        proxy = SearchProxy(self.url, rewriter, StageSettings(fusion="rrf", budget=self.budget))
        self.running = RunningApp(create_proxy_app(proxy)).__enter__()
        address = f"{self.running.url}/{self.index}/_search"
        return lambda: self.http.post(address, json=BODY).headers.get("X-Tsqr-Fusion") == "rrf"

    def close(self) -> None:
        for app in (self.running, self.relay):
            if app is not None:
                app.__exit__(None, None, None)
        self.http.close()


BODY = {"query": {"match": {"text": QUERY}}, "size": 10}


def node_product(url: str) -> tuple[str, bool]:
    """The node's product and version, and whether it is OpenSearch."""
    import httpx

    # not GET /: a node may refuse it (the make-engines Elasticsearch does)
    answer = httpx.get(f"{url}/_nodes/_local", params={"filter_path": "nodes.*.version"}, timeout=30)
    version = next(iter(answer.json()["nodes"].values()))["version"]
    opensearch = answer.headers.get("X-Elastic-Product") != "Elasticsearch"
    return f"{'OpenSearch' if opensearch else 'Elasticsearch'} {version}", opensearch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--host", choices=["client", "proxy"], default="client",
                        help="client: the Python client stage; proxy: tsqr proxy over HTTP")
    parser.add_argument("--node", default=os.environ.get("TSQR_ES_URL") or "http://127.0.0.1:9211",
                        help="the Elasticsearch/OpenSearch URL (default $TSQR_ES_URL)")
    parser.add_argument("--index-prefix", default="tsqr-anytime", help="the benchmark index's name prefix")
    args = parser.parse_args()

    url = args.node.rstrip("/")
    product, opensearch = node_product(url)
    index = f"{args.index_prefix}-{uuid.uuid4().hex[:6]}"
    indexer = BulkIndexer(url)
    indexer.create_index(index)
    indexer.index(index, list(CORPUS), list(CORPUS.values()), progress=False)
    host = (ProxyHost if args.host == "proxy" else ClientHost)(url, index, opensearch, args.budget)
    try:
        plain = []
        for _ in range(args.searches):
            started = time.perf_counter()
            host.plain()
            plain.append(time.perf_counter() - started)
        one_search = p(plain, 0.99)
        rows = [("instant rewriter", [0.0]), ("rewriter 0.1-0.4 s", [0.1, 0.2, 0.3, 0.4]),
                ("rewriter 0.3-3 s", [0.3, 0.6, 1.0, 2.0, 3.0]), ("rewriter always 5 s", [5.0])]
        print(f"# anytime rewriting, {args.host} on {product}, budget {args.budget:g} s, "
              f"{args.searches} searches per row, {platform.machine()}, {time.strftime('%Y-%m-%d')}")
        print(f"# plain search with the original: p50 {p(plain, 0.5):.1f} ms, p99 {one_search:.1f} ms")
        print(f"{'rewriter':<24}{'p50 ms':>10}{'p99 ms':>10}{'bound ms':>10}{'fused':>8}{'within':>8}")
        for name, delays in rows:
            searches = args.searches if max(delays) < 2 else max(10, args.searches // 10)  # slow rows: fewer
            search = host.searcher(Rewriter(DrawnDelay(delays, seed=20261205), prompt="tsqr-think-v1", params="greedy"))
            times, fused = [], 0
            for _ in range(searches):
                started = time.perf_counter()
                fused += search()
                times.append(time.perf_counter() - started)
            bound = args.budget * 1000 + one_search
            within = sum(t * 1000 <= bound for t in times) / len(times)
            print(f"{name:<24}{p(times, 0.5):>10.1f}{p(times, 0.99):>10.1f}{bound:>10.1f}"
                  f"{fused / len(times):>8.0%}{within:>8.0%}")
        print(f"# mean plain search {statistics.mean(plain) * 1000:.1f} ms")
    finally:
        host.close()
        import httpx

        httpx.delete(f"{url}/{index}")
        indexer.close()


if __name__ == "__main__":
    main()
