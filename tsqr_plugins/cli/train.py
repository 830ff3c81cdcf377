"""`tsqr train data|grpo|sft`: build training data, run the paper's GRPO recipe or the SFT baseline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tsqr_plugins.errors import InputError
from tsqr_plugins.textfile import read_text


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("train", help="retrain TongSearch-QR: data, GRPO, SFT baseline",
                                 description="See training/README.md for the recipes.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    data = actions.add_parser("data", help="build GRPO training data (parquet)")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--h4", metavar="SOURCE",
                        help="HuggingFaceH4/stack-exchange-preferences: 'hub' (streamed) or a local file/folder")
    source.add_argument("--from-jsonl", type=Path, help='your own {"query": ..., "positives": [...]} lines')
    data.add_argument("--reasoning", type=Path, help="V1: positives from a JSON {question: text} of a larger model")
    data.add_argument("--per-domain", type=int, default=1200, help="questions kept per domain (default 1200, as released)")
    data.add_argument("--seed", type=int, default=2025, help="default 2025, as released")
    data.add_argument("--max-query-chars", type=int, default=16000,
                      help="longer questions are dropped (default 16000, as released)")
    data.add_argument("--domains", default="released",
                      help="comma-separated domains to keep, 'all', or 'released' (default: the released sampler's "
                      "9 targets)")
    data.add_argument("--sampler", choices=("released", "reservoir"), default="released",
                      help="released: collect, shuffle per domain, cut (default); reservoir: one pass, bounded memory")
    data.add_argument("--domain-parsing", choices=("released", "fixed"), default="released",
                      help="released: as the released sampler (it never matches stackoverflow.com); fixed: by host")
    data.add_argument("--image-filter", choices=("released", "wide"), default="released",
                      help="released: drop questions containing '.png'; wide: any image markup")
    data.add_argument("--think", action="store_true", help="the paper's think prompt (rewards parse <answer>)")
    data.add_argument("--prompt", choices=("released", "eval"), default="released",
                      help="released: the released training data's user turn ('Instructions: ... Question: <q>'; "
                      "default); eval: the evaluation prompt ('Query: <q>')")
    data.add_argument("--output", type=Path, required=True, help="parquet file to write")

    for name, help_text in (("grpo", "the paper's GRPO recipe on TRL"), ("sft", "the SFT baseline on TRL")):
        run = actions.add_parser(name, help=help_text)
        run.add_argument("--config", required=True, type=Path, help="recipe YAML (training/configs/)")
        run.add_argument("--model", help="override the recipe's model")
        run.add_argument("--dataset", help="override the recipe's dataset")
        run.add_argument("--output-dir", help=f"override where {name} saves (the recipe's "
                         f"{'sft_output_dir' if name == 'sft' else 'output_dir'})")
        again = run.add_mutually_exclusive_group()
        again.add_argument("--overwrite", action="store_true", help="replace what the output folder holds")
        again.add_argument("--resume", action="store_true", help="continue from the output folder's last checkpoint")
        run.add_argument("--max-steps", type=int, help="override the number of optimiser steps")
    parser.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    if args.action == "data":
        return _data(args)
    from tsqr_plugins.training.grpo import check_output_dir, next_step_command, train_grpo, train_sft
    from tsqr_plugins.training.recipe import Recipe

    where = "sft_output_dir" if args.action == "sft" else "output_dir"
    recipe = Recipe.load(args.config, model=args.model, dataset=args.dataset, **{where: args.output_dir})
    if args.max_steps is not None:
        getattr(recipe, args.action)["max_steps"] = args.max_steps
    check_output_dir(recipe.output_for(args.action), overwrite=args.overwrite, resume=args.resume)
    if args.action == "grpo":
        output = train_grpo(recipe, resume=args.resume)
    else:
        output = train_sft(recipe, resume=args.resume)
    print(f"saved {output}")
    print(f"evaluate it with: {next_step_command(output)}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from tsqr_plugins.training import data

    if args.from_jsonl:
        examples = data.read_user_jsonl(args.from_jsonl, args.max_query_chars)
    else:
        if args.per_domain < 1:
            raise InputError(f"--per-domain must be >= 1, got {args.per_domain}")
        reasoning = None
        if args.reasoning:
            try:
                reasoning = json.loads(read_text(args.reasoning))
            except InputError:
                raise  # names the file already (not UTF-8, UTF-16)
            except (OSError, ValueError) as error:
                raise InputError(f"--reasoning {args.reasoning}: {error}") from None
            if not isinstance(reasoning, dict):
                raise InputError(f"--reasoning {args.reasoning} must be a JSON object {{question: text}}")
        if args.domains == "released":
            domains = frozenset(data.RELEASED_DOMAINS)
        elif args.domains == "all":
            domains = None
        else:
            domains = frozenset(d.strip() for d in args.domains.split(",") if d.strip())
        settings = data.SamplingSettings(args.per_domain, args.seed, args.max_query_chars, domains, args.sampler,
                                         args.domain_parsing, args.image_filter)
        source = None if args.h4 == "hub" else args.h4
        examples = data.sample_h4(data.iter_h4_rows(source), settings, reasoning)
    path = data.write_parquet(data.to_records(examples, think=args.think, prompt_family=args.prompt), args.output)
    domains = sorted({e.domain for e in examples if e.domain})
    print(f"{path}: {len(examples)} examples" + (f" from {len(domains)} domains" if domains else ""), file=sys.stdout)
    return 0
