"""Training recipes: a YAML file naming the model, the data, the reward and TRL's own config.

    model: Qwen/Qwen2.5-1.5B-Instruct      # or a local path, or "tiny" (a random Qwen2 built here)
    dataset: data/train.parquet            # `tsqr train data` output
    max_prompt_tokens: 8000                # longer prompts keep their last tokens (the released run's TRL 0.23)
    output_dir: checkpoints/tsqr-grpo      # GRPO's checkpoint; sft_output_dir (default <output_dir>-sft) for SFT
    reward: {embedding_model: BAAI/bge-base-en-v1.5, device: null, bm25_weight: 0.0}
    grpo: {learning_rate: 1.0e-6, beta: 0.008, ...}   # GRPOConfig fields, checked against TRL
    sft: {...}                                         # SFTConfig fields (the SFT baseline)

Every ``grpo``/``sft`` key is checked against the installed TRL's config class before anything
is loaded: a name TRL does not have (renamed or removed across versions) is an error naming it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..gain import DEFAULT_EMBEDDING_MODEL
from ..lazy import require
from ..textfile import read_text

KNOWN_RENAMES = {  # what older recipes may still say, and what to write instead
    "max_prompt_length": "write max_prompt_tokens: N at the recipe's top level (TRL >= 1.0 no longer truncates "
                         "prompts; tsqr does, as TRL 0.23 did for the released run)",
    "warmup_ratio": "write warmup_steps: 0.1 (a float below 1 is a ratio since transformers 5)",
}


@dataclass
class Recipe:
    model: str
    dataset: str
    output_dir: str  # where `tsqr train grpo` saves
    # Completions per optimiser step, kept whatever the number of processes (None: as configured).
    effective_batch: int | None = None
    # Longer templated prompts keep their last tokens, as the released run's TRL 0.23 did
    # (GRPOConfig.max_prompt_length=8000); None: never truncated. GRPO only.
    max_prompt_tokens: int | None = None
    sft_output_dir: str = ""  # where `tsqr train sft` saves (default: output_dir + "-sft"), never the GRPO one
    reward: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    sft: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def output_for(self, kind: str) -> str:
        if kind == "sft":
            return self.sft_output_dir or f"{self.output_dir.rstrip('/')}-sft"
        return self.output_dir

    @property
    def embedding_model(self) -> str:
        return self.reward.get("embedding_model", DEFAULT_EMBEDDING_MODEL)

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> Recipe:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InputError(f"no recipe at {path} (see training/configs/)")
        try:
            data = yaml.safe_load(read_text(path)) or {}
        except yaml.YAMLError as error:
            raise InputError(f"{path} is not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise InputError(f"{path} must be a mapping of settings")
        data.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)} - {"source"}
        if unknown:
            raise InputError(f"{path}: unknown settings {sorted(unknown)}; known: model, dataset, output_dir, "
                             "sft_output_dir, effective_batch, max_prompt_tokens, reward, grpo, sft")
        missing = [name for name in ("model", "dataset", "output_dir") if not data.get(name)]
        if missing:
            raise InputError(f"{path}: missing {', '.join(missing)} (or pass --{missing[0].replace('_', '-')})")
        limit = data.get("max_prompt_tokens")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InputError(f"{path}: max_prompt_tokens must be a positive integer or null, not {limit!r}")
        return cls(**data, source=str(path))


@dataclass(frozen=True)
class BatchPlan:
    """How ``effective_batch`` completions per optimiser step are split over the processes."""

    completions: int
    generations: int
    processes: int
    per_device: int
    accumulation: int

    @property
    def prompts(self) -> int:
        return self.completions // self.generations

    def describe(self) -> str:
        return (f"effective batch: {self.completions} completions = {self.prompts} prompts x {self.generations} "
                f"generations per optimiser step ({self.processes} processes x {self.per_device} per device x "
                f"{self.accumulation} accumulation steps)")


def plan_batch(grpo: dict[str, Any], processes: int, effective_batch: int | None) -> BatchPlan:
    """Keep ``effective_batch`` for any number of processes: the per-device batch is the largest
    divisor of each process's share not above the recipe's, and accumulation makes up the rest."""
    generations = int(grpo.get("num_generations", 8))
    per_device = int(grpo.get("per_device_train_batch_size", 8))
    accumulation = int(grpo.get("gradient_accumulation_steps", 1))
    if effective_batch is None:
        return BatchPlan(processes * per_device * accumulation, generations, processes, per_device, accumulation)
    if effective_batch % generations:
        raise InputError(f"effective_batch {effective_batch} is not a whole number of prompts x {generations} generations")
    if effective_batch % processes:
        raise InputError(f"effective_batch {effective_batch} cannot be split over {processes} processes; "
                         f"use a number of processes that divides it")
    share = effective_batch // processes
    per_device = max(d for d in range(1, min(per_device, share) + 1) if share % d == 0)
    return BatchPlan(effective_batch, generations, processes, per_device, share // per_device)


def trl_config(kind: str, settings: dict[str, Any], output_dir: str):
    """TRL's ``GRPOConfig``/``SFTConfig`` from recipe settings, every key checked first."""
    trl = require("trl", "train", "training")
    config_class = {"grpo": trl.GRPOConfig, "sft": trl.SFTConfig}[kind]
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(settings) - known)
    if unknown:
        hints = [f"{name}: {KNOWN_RENAMES[name]}" for name in unknown if name in KNOWN_RENAMES]
        raise InputError(f"TRL {trl.__version__} {config_class.__name__} has no {', '.join(unknown)}"
                         + (f" ({'; '.join(hints)})" if hints else ""))
    try:
        return config_class(output_dir=output_dir, **settings)
    except (TypeError, ValueError) as error:
        raise InputError(f"TRL {trl.__version__} refused the {kind} settings: {error}") from None
