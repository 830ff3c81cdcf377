"""`tsqr eval`: BRIGHT-style evaluation of rewritten vs original queries on retrievers."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from tsqr_plugins.backends.cache import default_cache_dir
from tsqr_plugins.cli.rewrite import add_backend_options, add_rewriting_options, build_backend, build_rewriter
from tsqr_plugins.errors import InputError
from tsqr_plugins.settings import add_renamed


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "eval",
        help="evaluate rewriting on BRIGHT or a BEIR folder (nDCG@10)",
        description=(
            "Search each task with the original and the rewritten queries on each retriever, score "
            "them (nDCG@10, Recall@10/100, MAP@100, MRR@10) and write results.json, TREC runs, "
            "report.md and plot.png. `tsqr compare DIR...` renders earlier result folders as one table."
        ),
    )
    parser.add_argument("--dataset", help="sample | bright:<task>[,<task>] | bright:all | <BEIR or BRIGHT folder>")
    add_renamed(parser, "--retriever", "--backend", default="embedded",
                help="what searches, comma separated: embedded (default), pyserini[:bm25], pyterrier, "
                "dense:<model> (dense:minilm offline), elasticsearch[:<url>], opensearch[:<url>]")
    parser.add_argument("--dense-index", choices=("flat", "hnsw", "ivf"),
                        help="dense retrievers: exact inner product (flat, default) or approximate HNSW/IVF for large corpora")
    parser.add_argument("--rewriter", default="none",
                        help="none | file:<rewrites.json> | transformers | vllm | openai (default none)")
    parser.add_argument("--combine", help="several ways to use the rewrites, scored side by side in one run: a "
                        "comma-separated list of replace, concat (--repeat copies of the original, then the rewrite), "
                        "adaptive (copies of the original about a third of the rewrite's words) "
                        "and rrf (the original's and the rewrite's results fused by reciprocal rank; replace is "
                        "reported with it); with a paired t-test of each against the original queries")
    parser.add_argument("--rrf-k", type=float, default=60.0, help="rrf: the rank constant (default 60)")
    parser.add_argument("--samples", type=int, default=1,
                        help="rewrites per query (default 1), sampled in one engine call where it can: their "
                        "texts are joined for replace/concat/adaptive, and rrf fuses the original's list with "
                        "each sample's that did not fall back; each is cached under its sample index")
    parser.add_argument("--output", type=Path, help="result folder (created; an existing one needs --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier run in --output (its runs/, results.json, report.md, plot.png)")
    parser.add_argument("--bright-dir", type=Path, help="local copy of the BRIGHT dataset (default $TSQR_BRIGHT_DIR; else, for --retriever pyserini alone, "
                        "pyserini's own BRIGHT topics, qrels and index; else the hub)")
    parser.add_argument("--long-context", action="store_true", help="BRIGHT long documents and gold_ids_long")
    parser.add_argument("--limit", type=int, help="only the first N queries of each task")
    parser.add_argument("--k", type=int, default=1000, help="results per query (default 1000, as BRIGHT)")
    parser.add_argument("--rewrite-gain", action="store_true", help="also report the paper's embedding reward per query")
    parser.add_argument("--gain-model", default=None, help="sentence-transformers model for --rewrite-gain (default BAAI/bge-base-en-v1.5)")
    parser.add_argument("--index-cache", type=Path, help="where indexes are kept (default: the rewrite cache folder, $TSQR_CACHE_DIR or ~/.cache/tsqr)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="DIR", help=argparse.SUPPRESS)  # now tsqr compare
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    add_backend_options(parser)
    add_rewriting_options(parser)
    parser.add_argument("--batch-size", type=int, default=32, help="queries per rewrite batch (default 32)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.compare:  # the old spelling, kept for one release
        from tsqr_plugins.cli.compare import write_comparison

        print("tsqr: warning: `tsqr eval --compare` is now `tsqr compare DIR... [--output DIR]`", file=sys.stderr)
        return write_comparison(args.compare, args.output)
    if not args.dataset or not args.output:
        raise InputError("tsqr eval needs --dataset and --output")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    combine = tuple(mode.strip() for mode in (args.combine or "").split(",") if mode.strip())
    if combine:
        from tsqr_plugins.eval.runner import check_combinations

        check_combinations(combine)
        if args.rewriter == "none":
            raise InputError("--combine needs a --rewriter")
    if args.samples < 1:
        raise InputError(f"--samples must be >= 1, got {args.samples}")
    if args.samples > 1 and args.rewriter == "none":
        raise InputError("--samples needs a --rewriter")
    prepare_output(args.output, args.overwrite)
    from tsqr_plugins.eval.datasets import load_tasks
    from tsqr_plugins.eval.runner import EvalSettings, run_eval

    retrievers = [name.strip() for name in args.retriever.split(",") if name.strip()]
    # pyserini's own BRIGHT topics, qrels and index serve a run on pyserini alone (they hold no texts)
    pyserini_only = bool(retrievers) and all(r.partition(":")[0] == "pyserini" for r in retrievers)
    tasks = [task.limit(args.limit) for task in load_tasks(
        args.dataset, args.bright_dir, args.long_context, pyserini_resources=pyserini_only and not args.rewrite_gain)]
    rewriter, backend = _rewriter(args)
    gain_encoder = None
    if args.rewrite_gain:
        if rewriter is None:
            raise InputError("--rewrite-gain needs a --rewriter")
        from tsqr_plugins.gain import DEFAULT_EMBEDDING_MODEL, sentence_encoder

        gain_encoder = sentence_encoder(args.gain_model or DEFAULT_EMBEDDING_MODEL)
    settings = EvalSettings(
        retrievers=retrievers, output=args.output, k=args.k, mode=args.mode, repeat=args.repeat,
        batch_size=args.batch_size, cache_dir=args.index_cache or default_cache_dir(), progress=not args.quiet,
        rewriter_label=args.rewriter, dataset_label=args.dataset,
        extra={"gain_model": gain_encoder.model_name} if gain_encoder else {},
        retriever_options={"index_type": args.dense_index}, combine=combine, rrf_k=args.rrf_k,
        samples=args.samples,
    )
    try:
        document = run_eval(tasks, settings, rewriter, gain_encoder)
    except BaseException:
        clear_results(args.output)  # no half-written folder that a later run would have to --overwrite
        raise
    finally:
        if backend is not None:
            backend.close()
    if not args.quiet:
        sys.stderr.write((args.output / "report.md").read_text(encoding="utf-8"))
        print(f"tsqr: results in {args.output} ({len(document['tasks'])} tasks)", file=sys.stderr)
    return 0


def _rewriter(args: argparse.Namespace):
    if args.rewriter == "none":
        return None, None
    backend = build_backend(args)
    return build_rewriter(args, backend), backend


RESULT_FILES = ("results.json", "report.md", "plot.png")


def prepare_output(output: Path, overwrite: bool) -> None:
    """An empty or new result folder: an earlier run's files are never mixed with this one's."""
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output} is a file; name a folder")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise InputError(f"--output {output} already holds results; pass --overwrite to replace them "
                             "or choose another folder")
        clear_results(output)


def clear_results(output: Path) -> None:
    for name in RESULT_FILES:
        (output / name).unlink(missing_ok=True)
    shutil.rmtree(output / "runs", ignore_errors=True)
    if output.is_dir() and not any(output.iterdir()):
        output.rmdir()
