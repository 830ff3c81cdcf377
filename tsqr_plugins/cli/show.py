"""Print rewrites from a `tsqr rewrite` output file in a readable form (used by `make demo`)."""

from __future__ import annotations

import argparse
import json
import textwrap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsqr_plugins.cli.show")
    parser.add_argument("path")
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--width", type=int, default=100)
    args = parser.parse_args(argv)
    with open(args.path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if number >= args.limit:
                break
            row = json.loads(line)
            print(f"[{row['query_id']}] {row['original'].splitlines()[0]}")
            shown = textwrap.shorten(" ".join(row["text"].split()), width=4 * args.width)
            print(textwrap.indent(textwrap.fill(shown, width=args.width), "    "))
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
