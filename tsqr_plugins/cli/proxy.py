"""`tsqr proxy`: the rewriting stage as an HTTP proxy in front of Elasticsearch or OpenSearch."""

from __future__ import annotations

import argparse
from typing import Any

from tsqr_plugins.adapters.stage import FUSIONS
from tsqr_plugins.fusion import RRF_K
from tsqr_plugins.querydsl import DEFAULT_CLAUSE_BUDGET, SCORINGS
from tsqr_plugins.cli.rewrite import add_backend_options, add_rewriting_options, build_backend, build_rewriter
from tsqr_plugins.errors import InputError
from tsqr_plugins.httpserver import DEFAULT_MAX_CONNECTIONS, DEFAULT_WRITE_TIMEOUT
from tsqr_plugins.lazy import require
from tsqr_plugins.settings import add_renamed


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "proxy",
        help="rewrite _search requests on their way to Elasticsearch/OpenSearch",
        description="Rewrites the match/multi_match queries of GET/POST <index>/_search bodies and passes "
        "every other request through unchanged, to --search-node only. Binds 127.0.0.1:9201 by default. "
        "Use a shared `tsqr serve` with --rewriter openai --base-url http://127.0.0.1:8000/v1.",
    )
    add_renamed(parser, "--search-node", "--upstream", required=True,
                help="the Elasticsearch/OpenSearch URL, e.g. http://127.0.0.1:9200")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9201, help="port (default 9201)")
    add_renamed(parser, "--rewriter", "--backend", default="openai",
                help="openai (default), transformers, vllm, file:<rewrites.json>")
    parser.add_argument("--field", action="append", dest="fields",
                        help="rewrite text queries on this field (repeatable; default: every match/multi_match)")
    parser.add_argument("--scoring", choices=SCORINGS, default="match",
                        help="match: plain BM25 on the rewrite; bm25q: BRIGHT's query-side BM25 via _termvectors")
    parser.add_argument("--clause-budget", type=int, default=DEFAULT_CLAUSE_BUDGET,
                        help=f"most clauses a rewrite may add (default {DEFAULT_CLAUSE_BUDGET}; engines allow 1,024)")
    parser.add_argument("--original-boost", type=float, default=1.0, help="--mode both: boost of the original")
    parser.add_argument("--rewrite-boost", type=float, default=1.0, help="--mode both: boost of the rewrite")
    parser.add_argument("--fusion", choices=[f for f in FUSIONS if f], default=None,
                        help="rrf: answer a rewritten _search with the reciprocal rank fusion of the original "
                        "search and the rewritten one (one _msearch; see docs/proxy.md for what is not fused)")
    parser.add_argument("--rrf-k", type=float, default=RRF_K, help=f"--fusion rrf: the rank constant (default {RRF_K})")
    parser.add_argument("--original-weight", type=float, default=1.0,
                        help="--fusion rrf: the weight of the original query's ranking (default 1)")
    parser.add_argument("--rewrite-weight", type=float, default=1.0,
                        help="--fusion rrf: the weight of the rewrite's ranking (default 1)")
    parser.add_argument("--budget", type=float, default=None,
                        help="--fusion rrf: anytime rewriting, seconds the rewrite may take; the original is "
                        "searched at once and answered alone when the rewrite is later (default: no budget)")
    parser.add_argument("--samples", type=int, default=1,
                        help="rewrites of each text query, sampled in one engine call where it can (1 to 16, "
                        "default 1): without --fusion their texts joined are the rewrite; with --fusion rrf each "
                        "sample that did not fall back is its own item of the one _msearch")
    parser.add_argument("--rewrite-filters", action="store_true",
                        help="also rewrite text queries under bool filter/must_not, boosting negative and "
                        "constant_score (left alone by default: they exclude documents, they do not rank them)")
    add_renamed(parser, "--search-node-timeout", "--upstream-timeout", type=float, default=60.0,
                help="seconds to wait for the search node (default 60); past it the answer is 504")
    parser.add_argument("--read-timeout", type=float, default=10.0,
                        help="seconds a client has to send its headers and a _search body, and between the "
                        "chunks of any other body (default 10)")
    parser.add_argument("--write-timeout", type=float, default=DEFAULT_WRITE_TIMEOUT,
                        help=f"seconds a client may leave an answer unread (over 64 KiB of it) before its "
                        f"connection, and the one to the search node, is closed (default {DEFAULT_WRITE_TIMEOUT:g})")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                        help=f"client connections served at once; past it, 503 (default {DEFAULT_MAX_CONNECTIONS})")
    parser.add_argument("--max-body-mb", type=float, default=10.0, help="largest _search body read (default 10)")
    add_backend_options(parser)
    add_rewriting_options(parser)
    # a search waits on the rewrite: the proxy's rewriting budget has a default
    parser.set_defaults(run=run, timeout=10.0)


def run(args: argparse.Namespace) -> int:
    from tsqr_plugins.adapters.stage import StageSettings
    from tsqr_plugins.adapters.proxy import MAX_SAMPLES, SearchProxy, create_proxy_app

    if not 1 <= args.samples <= MAX_SAMPLES:
        raise InputError(f"--samples must be from 1 to {MAX_SAMPLES}, got {args.samples}")
    if args.budget is not None and args.fusion is None:
        raise InputError("--budget (anytime rewriting) fuses the original's hits with the rewrite's: add --fusion rrf")
    settings = StageSettings(
        fields=tuple(args.fields) if args.fields else None, scoring=args.scoring, mode=args.mode,
        repeat=args.repeat, clause_budget=args.clause_budget, original_boost=args.original_boost,
        rewrite_boost=args.rewrite_boost, include_filters=args.rewrite_filters, fusion=args.fusion,
        rrf_k=args.rrf_k, original_weight=args.original_weight, rewrite_weight=args.rewrite_weight,
        budget=args.budget, samples=args.samples,
    )
    require("uvicorn", "serve", "tsqr proxy")
    rewriter = build_rewriter(args, build_backend(args))
    for flag, value in (("--search-node-timeout", args.search_node_timeout), ("--read-timeout", args.read_timeout),
                        ("--write-timeout", args.write_timeout)):
        if not value > 0:
            raise InputError(f"{flag} must be > 0 seconds, got {value}")
    if args.max_connections < 1:
        raise InputError(f"--max-connections must be >= 1, got {args.max_connections}")
    proxy = SearchProxy(args.search_node, rewriter, settings, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                        timeout=args.search_node_timeout, read_timeout=args.read_timeout)
    from tsqr_plugins.httpserver import bind, serve

    listener = bind(args.host, args.port, "tsqr proxy")
    # The search node's Server and Date fields are relayed; uvicorn's own would duplicate them.
    serve(create_proxy_app(proxy), listener, "tsqr proxy", f"rewriting searches for {args.search_node}",
          args.read_timeout, args.write_timeout, args.max_connections, server_header=False, date_header=False)
    return 0
