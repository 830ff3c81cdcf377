"""`tsqr compare DIR...`: one table for several `tsqr eval` result folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("compare", help="one table for several tsqr eval result folders",
                                 description="Read the results.json of each folder and print one table (markdown).")
    parser.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="tsqr eval --output folders")
    parser.add_argument("--output", type=Path, help="also write the table to DIR/report.md")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return write_comparison(args.folders, args.output)


def write_comparison(folders: list[Path], output: Path | None) -> int:
    from tsqr_plugins.eval.report import compare

    table = compare(folders)
    if output:
        output.mkdir(parents=True, exist_ok=True)
        (output / "report.md").write_text(table, encoding="utf-8")
    sys.stdout.write(table)
    return 0
