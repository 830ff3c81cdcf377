"""`tsqr <command>`: one module per command, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tsqr_plugins import __version__
from tsqr_plugins.errors import TSQRError

COMMANDS = ("env", "rewrite", "serve", "proxy", "opensearch", "index", "eval", "compare", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsqr", description="TongSearch-QR reasoning query rewriting for search and RAG stacks."
    )
    parser.add_argument("--version", action="version", version=f"tsqr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"tsqr_plugins.cli.{name}").add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="tsqr: %(levelname)s: %(message)s"
    )
    try:
        return args.run(args)
    except TSQRError as error:
        print(f"tsqr: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tsqr: interrupted; finished rewrites are in the cache, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
