"""`tsqr opensearch install|uninstall|render`: the native OpenSearch search-pipeline stage."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from tsqr_plugins import engine_configs as configs


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "opensearch",
        help="install the rewriting stage as OpenSearch search pipelines (no Python in the search path)",
        description="install: ml-commons connector to `tsqr serve`, remote model, search pipelines "
        "<name>-rewrite (2.16+), <name>-rewrite-template (2.19+) and <name>-rewrite-rrf (with neural-search 2.19+), "
        "index template and ingest pipeline. "
        "uninstall: remove them. render: write the JSON documents to a folder to read or apply by hand.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in ("install", "uninstall"):
        sub = actions.add_parser(action)
        sub.add_argument("--url", default=os.environ.get("TSQR_OPENSEARCH_URL", "http://127.0.0.1:9200"),
                         help="OpenSearch URL (default $TSQR_OPENSEARCH_URL or http://127.0.0.1:9200)")
        sub.add_argument("--user", help="basic auth user (password from $TSQR_OPENSEARCH_PASSWORD)")
        sub.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
        sub.add_argument("--name", default=configs.DEFAULT_NAME, help="prefix of everything created (default tsqr)")
        sub.add_argument("--no-index-template", action="store_true", help="leave index template and ingest pipeline alone")
        if action == "install":
            sub.add_argument("--service-url", required=True, help="tsqr serve, as OpenSearch reaches it (http://host:8000)")
            sub.add_argument("--field", default=configs.DEFAULT_FIELD, help="text field of the match queries (default text)")
            sub.add_argument("--service-api-key-env", default="TSQR_API_KEY",
                             help="environment variable holding the service's bearer token (default TSQR_API_KEY)")
            sub.add_argument("--timeout", type=int, default=configs.DEFAULT_REWRITE_BUDGET_S,
                             help="seconds a pipeline search waits for its rewrite; the service answers with the "
                             f"original query past it (default {configs.DEFAULT_REWRITE_BUDGET_S})")
            sub.add_argument("--model-access", choices=("public", "restricted", "private"), default="public",
                             help="who may use the model where model access control is on (default public: every "
                             "user's pipeline searches are rewritten; they need cluster:admin/opensearch/ml/predict)")
            sub.add_argument("--backend-role", action="append", default=[], dest="backend_roles",
                             help="with --model-access restricted: a backend role that may use the model (repeatable)")
            sub.add_argument("--mode", choices=configs.MATCH_MODES, default="replace",
                             help="what the pipelines search for: the rewrite (replace, default), the original "
                             "repeated then the rewrite (concat), or as many copies as make a third of the "
                             "rewrite's words (adaptive)")
            sub.add_argument("--rrf-k", type=int, default=configs.RRF_K,
                             help=f"<name>-rewrite-rrf: the RRF rank constant, 1 to 10000 (default {configs.RRF_K})")
            sub.add_argument("--rrf-weights", type=float, nargs=2, metavar=("ORIGINAL", "REWRITE"),
                             help="<name>-rewrite-rrf: the weight of each list (scaled to sum to 1, as neural-search "
                             "wants; 3.1+; default equal)")
            sub.add_argument("--no-check", action="store_true",
                             help="skip the rewrite through OpenSearch that install ends with (for a service not up yet)")
    render = actions.add_parser("render")
    # No default: from a clone, ./integrations holds the tracked copies of these files.
    render.add_argument("--output", "--out", dest="output", type=Path, required=True,
                        help="folder to write the JSON documents into")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "render":
        for path in configs.render_integrations(args.output):
            print(path)
        return 0
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller
    from tsqr_plugins.search.bulk import basic_auth

    auth = basic_auth(args.user, "TSQR_OPENSEARCH_PASSWORD")
    installer = OpenSearchInstaller(args.url, auth=auth, verify=not args.insecure)
    try:
        if args.action == "install":
            installed = installer.install(args.service_url, args.name, args.field,
                                          os.environ.get(args.service_api_key_env), not args.no_index_template,
                                          budget_s=args.timeout, model_access=args.model_access,
                                          backend_roles=tuple(args.backend_roles), check=not args.no_check,
                                          rrf_k=args.rrf_k, rrf_weights=args.rrf_weights, mode=args.mode)
            for key, value in installed.items():
                print(f"{key}: {value}")
            print(f"search with: GET /<index>/_search?search_pipeline={args.name}-rewrite "
                  f'{{"query": {{"match": {{"{args.field}": "..."}}}}}}')
            if f"{args.name}-rewrite-rrf" in installed["search_pipelines"]:
                print(f"  or, the original and the rewrite fused by reciprocal rank: search_pipeline={args.name}-rewrite-rrf "
                      "(same body, from 0; paging: docs/opensearch.md)")
        else:
            report = installer.uninstall(args.name, not args.no_index_template)
            print("\n".join(f"removed {what}" for what in report.done) if report.done else "nothing to remove")
            for what in report.kept:
                print(f"left in place: {what}")
    finally:
        installer.close()
    return 0
