"""The GRPO reward: the paper's semi-rule-based embedding gain, with TRL's reward signature.

    reward = get_embedding_reward("BAAI/bge-base-en-v1.5")
    GRPOTrainer(model, reward_funcs=[reward], train_dataset=dataset, ...)

The dataset carries ``query`` (the original question), ``positives`` (documents) and ``think``
columns; TRL passes them to the reward as keyword lists. The score is
:func:`tsqr_plugins.gain.embedding_gain` — the function ``tsqr eval --rewrite-gain`` reports — so
training optimises what evaluation measures. An empty completion, or in think mode one without
``<think>…</think><answer>…</answer>``, scores -1 (the released script's logging bug made that path
raise; here it returns -1 and logs the count).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InputError, UnparseableCompletion
from ..gain import DEFAULT_EMBEDDING_MODEL, INVALID_REWRITE_SCORE, Encoder, embedding_gain, sentence_encoder
from ..prompts import DEFAULT_PROMPT_ID, get_prompt

logger = logging.getLogger(__name__)


def completion_text(completion: Any) -> str:
    """The text of a completion: TRL passes strings, or message lists for conversational data."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    raise InputError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def rewrite_of(completion: Any, think: bool) -> str | None:
    """The rewrite inside a completion, or None when it is empty or unparseable."""
    prompt = get_prompt("tsqr-think-v1" if think else DEFAULT_PROMPT_ID)
    try:
        return prompt.parse(completion_text(completion))
    except UnparseableCompletion:
        return None


def get_embedding_reward(model: str = DEFAULT_EMBEDDING_MODEL, encoder: Encoder | None = None,
                         device: str | None = None) -> Callable[..., list[float]]:
    """A TRL reward function scoring completions by the embedding gain over the original query."""
    encode = encoder or sentence_encoder(model, device=device)

    def embedding_reward(completions: Sequence[Any], query: Sequence[str], positives: Sequence[Sequence[str]],
                         think: Sequence[bool] | None = None, **_: Any) -> list[float]:
        flags = think if think is not None else [False] * len(completions)
        rewrites = [rewrite_of(c, bool(t)) for c, t in zip(completions, flags)]
        invalid = sum(r is None for r in rewrites)
        if invalid:
            logger.info("%d of %d completions were empty or unparseable (reward %s)",
                        invalid, len(rewrites), INVALID_REWRITE_SCORE)
        return embedding_gain(list(query), rewrites, [list(p) for p in positives], encode)

    embedding_reward.__name__ = "embedding_gain"  # the name TRL logs the reward under
    return embedding_reward
