"""GRPO (the paper's recipe) and the SFT baseline on TRL, from a recipe file.

The trained checkpoint is a plain transformers model + tokenizer with the chat template, so every
rewriter backend loads it (``--rewriter transformers --model <output_dir>``, ``vllm``, ``tsqr serve``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..lazy import require
from .recipe import Recipe, plan_batch, trl_config
from .reward import get_bm25_reward, get_embedding_reward

logger = logging.getLogger(__name__)
REQUIRED_COLUMNS = ("prompt", "query", "positives")


def load_training_data(path: str):
    datasets = require("datasets", "train", "training")
    if not Path(path).is_file():
        raise InputError(f"no training data at {path}; make it with `tsqr train data`")
    dataset = datasets.load_dataset("parquet", data_files=str(path), split="train")
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise InputError(f"{path} lacks the columns {missing}; make it with `tsqr train data`")
    if len(dataset) == 0:
        raise InputError(f"{path} holds no examples")
    return dataset


def resolve_model(recipe: Recipe, kind: str = "grpo") -> str:
    """The model path; ``tiny`` builds a random-weight Qwen2 (CPU smoke runs, no hub)."""
    if recipe.model != "tiny":
        return recipe.model
    from .tiny_model import build_tiny_qwen2

    return str(build_tiny_qwen2(Path(recipe.output_for(kind)) / "tiny-base"))


def check_output_dir(output: str | Path, overwrite: bool = False, resume: bool = False) -> None:
    """A folder holding files is another run's checkpoint: refused unless asked to replace or resume it."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError(f"output_dir {output} is a file")
    if output.is_dir() and any(output.iterdir()) and not (overwrite or resume):
        raise InputError(f"output_dir {output} already holds files (another run's checkpoint?); pass --overwrite "
                         "to replace it, --resume to continue from its last checkpoint, or another --output-dir")


def train_grpo(recipe: Recipe, encoder=None, resume: bool = False) -> Path:
    trl = require("trl", "train", "GRPO training")
    bm25_weight = float(recipe.reward.get("bm25_weight", 0.0))
    settings = dict(recipe.grpo)
    batch = plan_batch(settings, processes(), recipe.effective_batch)
    settings.update(per_device_train_batch_size=batch.per_device, gradient_accumulation_steps=batch.accumulation)
    if is_main_process():
        print(f"tsqr train grpo: {batch.describe()}", flush=True)
    if bm25_weight > 0:
        settings.setdefault("reward_weights", [1.0, bm25_weight])
    config = trl_config("grpo", settings, recipe.output_for("grpo"))  # checked before anything heavy loads
    dataset = load_training_data(recipe.dataset)
    model = resolve_model(recipe)
    if recipe.max_prompt_tokens is not None:
        tokenizer = require("transformers", "train", "training").AutoTokenizer.from_pretrained(model)
        dataset, truncated = truncate_prompts(dataset, tokenizer, recipe.max_prompt_tokens)
        if is_main_process():
            print(f"tsqr train grpo: {truncated} of {len(dataset)} prompts longer than {recipe.max_prompt_tokens} "
                  "tokens keep their last tokens (as the released run's TRL 0.23 did)", flush=True)
    rewards = [get_embedding_reward(recipe.embedding_model, encoder=encoder, device=recipe.reward.get("device"))]
    if bm25_weight > 0:  # off by default: the paper trains on the embedding reward alone
        rewards.append(get_bm25_reward([d for docs in dataset["positives"] for d in docs]))
    trainer = trl.GRPOTrainer(model=model, reward_funcs=rewards, args=config, train_dataset=dataset)
    trainer.train(resume_from_checkpoint=resume or None)
    return _save(trainer, recipe, "grpo", {"effective_batch": dataclasses.asdict(batch) | {"prompts": batch.prompts},
                                          **algorithm(trainer)})


def truncate_prompts(dataset, tokenizer, max_tokens: int):
    """Prompts over ``max_tokens`` keep their last ``max_tokens`` tokens, as the released run did:
    TRL 0.23's GRPOTrainer (``max_prompt_length``, trl/trainer/grpo_trainer.py) templated each prompt,
    kept its last tokens and decoded them back to text. TRL >= 1.0 no longer truncates.

    Returns the dataset and how many prompts were cut. When any is cut, every prompt becomes its
    templated text (a column holds one type; TRL applies no template to text prompts, so the others
    read exactly as before)."""
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in dataset["prompt"]]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    over = [i for i, tokens in enumerate(ids) if len(tokens) > max_tokens]
    if not over:
        return dataset, 0
    for i in over:
        texts[i] = tokenizer.decode(ids[i][-max_tokens:], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return dataset.remove_columns("prompt").add_column("prompt", texts), len(over)


def train_sft(recipe: Recipe, resume: bool = False) -> Path:
    """Our SFT baseline (the released code has none; its values are ours): the same prompts, the
    positive document as the target completion."""
    trl = require("trl", "train", "SFT training")
    config = trl_config("sft", recipe.sft, recipe.output_for("sft"))
    dataset = load_training_data(recipe.dataset)
    dataset = dataset.map(lambda row: {"completion": [{"role": "assistant", "content": row["positives"][0]}]},
                          remove_columns=[c for c in dataset.column_names if c != "prompt"])
    trainer = trl.SFTTrainer(model=resolve_model(recipe, "sft"), args=config, train_dataset=dataset)
    trainer.train(resume_from_checkpoint=resume or None)
    return _save(trainer, recipe, "sft")


def processes() -> int:
    """Processes of this run (accelerate/torchrun set WORLD_SIZE)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _save(trainer: Any, recipe: Recipe, kind: str, extra: dict[str, Any] | None = None) -> Path:
    output = Path(recipe.output_for(kind))
    trainer.save_model(str(output))
    tokenizer = getattr(trainer, "processing_class", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(output))
    (output / "training_summary.json").write_text(json.dumps({**summary(trainer, recipe), **(extra or {})}, indent=2))
    return output


# GRPO settings whose defaults moved between TRL releases and change what is optimised
# (TRL 0.23: token-level importance-sampling truncation, cap 2.0; 1.16: sequence mask, clip 3.0;
# loss_type and reward scaling defaults changed too): recorded with the TRL version in every summary.
ALGORITHM_SETTINGS = ("loss_type", "beta", "epsilon", "epsilon_high", "scale_rewards", "importance_sampling_level",
                      "mask_truncated_completions", "vllm_importance_sampling_correction",
                      "vllm_importance_sampling_mode", "vllm_importance_sampling_cap",
                      "vllm_importance_sampling_clip_min", "vllm_importance_sampling_clip_max")


def algorithm(trainer: Any) -> dict[str, Any]:
    import trl

    settings = {name: getattr(trainer.args, name) for name in ALGORITHM_SETTINGS if hasattr(trainer.args, name)}
    return {"trl_version": trl.__version__, "algorithm": settings}


def summary(trainer: Any, recipe: Recipe) -> dict[str, Any]:
    """Steps, step times and the reward per logged step (what the notes and benchmarks quote)."""
    history = [entry for entry in trainer.state.log_history if "loss" in entry or "reward" in entry]
    return {
        "recipe": recipe.source,
        "model": recipe.model,
        "steps": trainer.state.global_step,
        "step_time_s": [entry.get("step_time") for entry in history],
        "reward": [entry.get("reward") for entry in history],
        "reward_by_function": {
            key[len("rewards/"):-len("/mean")]: [entry.get(key) for entry in history]
            for key in dict.fromkeys(k for entry in history for k in entry)
            if key.startswith("rewards/") and key.endswith("/mean")
        },
        "loss": [entry.get("loss") for entry in history],
    }


def next_step_command(output: Path) -> str:
    return (f"tsqr eval --dataset sample --rewriter transformers --model {output} "
            f"--output runs/{output.name}")
