"""`tsqr index`: bulk-index a dataset's corpus into Elasticsearch or OpenSearch with the shipped settings."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from tsqr_plugins.errors import InputError
from tsqr_plugins.search.bulk import ENGINES

URL_VARIABLES = {"elasticsearch": "TSQR_ES_URL", "opensearch": "TSQR_OPENSEARCH_URL"}


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "index",
        help="bulk-index a corpus into Elasticsearch/OpenSearch (BM25 k1=0.9 b=0.4, Lucene-English analyzer)",
        description="Creates one index per task (<prefix>-<task>) with the shipped index template's settings, "
        "sends the documents with _bulk (retrying 429s), and checks the final count.",
    )
    parser.add_argument("--engine", required=True, choices=ENGINES, help="the search engine the cluster runs")
    parser.add_argument("--dataset", required=True, help="sample | bright:<task>[,<task>] | bright:all | <folder>")
    parser.add_argument("--url", help="the cluster (default $TSQR_ES_URL or $TSQR_OPENSEARCH_URL)")
    parser.add_argument("--index-prefix", default="tsqr", help="indexes are named <prefix>-<task> (default tsqr)")
    parser.add_argument("--field", default="text", help="text field (default text)")
    parser.add_argument("--recreate", action="store_true", help="replace indexes that exist")
    parser.add_argument("--bright-dir", help="local copy of BRIGHT (default $TSQR_BRIGHT_DIR)")
    parser.add_argument("--long-context", action="store_true", help="BRIGHT's long documents")
    parser.add_argument("--user", help="basic auth user (password from $TSQR_SEARCH_PASSWORD)")
    parser.add_argument("--api-key-env", default="TSQR_ES_API_KEY",
                        help="Elasticsearch API key variable (default TSQR_ES_API_KEY)")
    parser.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    parser.add_argument("--batch-docs", type=int, default=500, help="documents per _bulk request (default 500)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tsqr_plugins.eval.datasets import load_tasks
    from tsqr_plugins.search.bulk import BulkIndexer, auth_headers, basic_auth, index_name

    url = args.url or os.environ.get(URL_VARIABLES[args.engine])
    if not url:
        raise InputError(f"--url is needed (or ${URL_VARIABLES[args.engine]})")
    if args.batch_docs < 1:
        raise InputError(f"--batch-docs must be >= 1, got {args.batch_docs}")
    auth = basic_auth(args.user, "TSQR_SEARCH_PASSWORD")
    tasks = load_tasks(args.dataset, args.bright_dir, args.long_context)
    indexer = BulkIndexer(url, auth=auth, headers=auth_headers(os.environ.get(args.api_key_env)),
                          verify=not args.insecure, batch_docs=args.batch_docs)
    try:
        for task in tasks:
            name = index_name(args.index_prefix, task.name)
            indexer.create_index(name, args.field, args.recreate)
            count = indexer.index(name, task.doc_ids, task.documents, args.field, progress=not args.quiet)
            print(f"{name}: {count} documents", file=sys.stdout)
    finally:
        indexer.close()
    return 0
