"""`tsqr rewrite`: rewrite a query file with any rewriter, resumably (through the cache)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tsqr_plugins.backends import Backend, load_backend, with_cache
from tsqr_plugins.backends.openai import DEFAULT_BASE_URL
from tsqr_plugins.backends.options import LOCAL, ModelOptions, local_backend
from tsqr_plugins.combine import DEFAULT_REPEAT, MODES
from tsqr_plugins.core import Rewriter
from tsqr_plugins.errors import InputError
from tsqr_plugins.params import PRESETS, GenerationParams
from tsqr_plugins.prompts import DEFAULT_PROMPT_ID, PROMPTS
from tsqr_plugins.queryfile import atomic_output, check_output, read_queries, write_jsonl
from tsqr_plugins.settings import add_arguments, add_renamed


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "rewrite",
        help="rewrite the queries of a file",
        description="Rewrite queries (JSONL, TSV or plain text) into JSONL. Re-running resumes from the cache.",
    )
    add_renamed(parser, "--rewriter", "--backend", required=True,
                help="transformers | vllm | openai | file:<rewrites.json|.jsonl>")
    parser.add_argument("--input", required=True, type=Path, help="queries: .jsonl, .tsv or one per line")
    parser.add_argument("--output", required=True, type=Path,
                        help="JSONL rewrites, written when complete (an existing file needs --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_backend_options(parser)
    add_rewriting_options(parser)
    parser.add_argument("--batch-size", type=int, default=32, help="queries per rewrite batch (default 32)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.set_defaults(run=run)


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """The options of the --rewriter's backend (model, server, device, cache)."""
    group = parser.add_argument_group("rewriter")
    add_arguments(group, ModelOptions)
    group.add_argument("--base-url", default=DEFAULT_BASE_URL, help=f"openai: server URL (default {DEFAULT_BASE_URL})")
    group.add_argument("--api-key", help="openai: bearer token (default $TSQR_API_KEY or $OPENAI_API_KEY)")
    group.add_argument("--concurrency", type=int, default=16, help="openai: requests in flight (default 16)")
    group.add_argument(
        "--on-missing", choices=("error", "fallback"), default="error",
        help="file: a query missing from the file is an error (default) or keeps the original",
    )
    group.add_argument("--cache", type=Path, help="rewrite cache file (default: one per rewriter and model in ~/.cache/tsqr)")
    group.add_argument("--no-cache", action="store_true", help="do not read or write the rewrite cache")


def add_rewriting_options(parser: argparse.ArgumentParser) -> None:
    """Prompt, sampling and how a rewrite is combined with its query."""
    group = parser.add_argument_group("rewriting")
    group.add_argument("--prompt", default=DEFAULT_PROMPT_ID, choices=sorted(PROMPTS), help="prompt id")
    group.add_argument("--think", action="store_true", help="the paper's think mode (--prompt tsqr-think-v1)")
    group.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="sampling preset (default paper)")
    group.add_argument("--temperature", type=float)
    group.add_argument("--top-p", type=float)
    group.add_argument("--top-k", type=int)
    group.add_argument("--repetition-penalty", type=float)
    group.add_argument("--max-tokens", type=int)
    group.add_argument("--seed", type=int)
    group.add_argument("--mode", choices=MODES, default="replace", help="how 'text' combines original and rewrite")
    group.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="concat: copies of the original (default 5)")
    group.add_argument("--strict", action="store_true", help="fail instead of falling back to the original query")
    group.add_argument("--timeout", type=float, help="time budget per batch in seconds; past it, fall back")


def build_backend(args: argparse.Namespace) -> Backend:
    """The backend of the rewriter ``args.rewriter`` names."""
    name = args.rewriter.partition(":")[0]
    if name in LOCAL:
        backend = local_backend(name, ModelOptions.from_values(args))
    else:
        options: dict[str, Any] = {
            "file": {"on_missing": args.on_missing},
            "openai": {"base_url": args.base_url, "model": args.model, "api_key": args.api_key,
                       "max_concurrency": args.concurrency},
        }.get(name, {})
        backend = load_backend(args.rewriter, **options)
    return backend if args.no_cache else with_cache(backend, args.cache)


def build_rewriter(args: argparse.Namespace, backend: Backend) -> Rewriter:
    params = GenerationParams.preset(
        args.preset,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    prompt = "tsqr-think-v1" if args.think else args.prompt
    return Rewriter(backend, prompt, params, strict=args.strict, timeout=args.timeout)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_output(args.output, args.input, overwrite=args.overwrite)
    queries = read_queries(args.input)
    backend = build_backend(args)
    rewriter = build_rewriter(args, backend)
    cached = fallbacks = 0
    try:
        with atomic_output(args.output) as output, tqdm(
            total=len(queries), desc="rewriting", unit="query", file=sys.stderr, disable=args.quiet
        ) as progress:
            for start in range(0, len(queries), args.batch_size):
                chunk = queries[start : start + args.batch_size]
                rewrites = rewriter.rewrite_batch([query.text for query in chunk])
                rows = []
                for query, rewrite in zip(chunk, rewrites):
                    rows.append({
                        "query_id": query.query_id,
                        "original": rewrite.original,
                        "text": rewrite.combined_text(args.mode, args.repeat),
                        "fallback": rewrite.fallback,
                        "model": rewrite.model,
                        "prompt_id": rewrite.prompt_id,
                    })
                    cached += rewrite.cached
                    fallbacks += rewrite.fallback
                write_jsonl(output, rows)
                progress.update(len(chunk))
    finally:
        backend.close()
    if not args.quiet:
        print(
            f"tsqr: wrote {len(queries)} rewrites to {args.output} ({cached} from the cache, {fallbacks} fell back)",
            file=sys.stderr,
        )
    return 0
