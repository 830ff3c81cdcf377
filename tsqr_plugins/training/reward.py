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
from ..measures import ndcg_at_k
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


def ndcg_at_10(ranked_ids: Sequence[str], relevant: set[str]) -> float:
    """Binary-relevance nDCG@10 (``measures.ndcg_at_k``, what ``tsqr eval`` reports)."""
    return ndcg_at_k(ranked_ids, dict.fromkeys(relevant, 1), 10)


def get_bm25_reward(documents: Sequence[str]) -> Callable[..., list[float]]:
    """Optional second reward: the BM25Q nDCG@10 gain of the rewrite over the original query.

    ``documents`` is the pool searched: every positive document of the training data (each
    question's positives compete with every other question's, as BRIGHT's corpora do), plus any
    extra negatives. The pool is indexed once with the embedded engine (BRIGHT's scoring). An
    empty or unparseable completion scores -1, as in the embedding reward.
    """
    from ..search.bm25 import BM25Index

    pool = list(dict.fromkeys(d for d in documents if isinstance(d, str) and d.strip()))
    if not pool:
        raise InputError("the BM25 reward needs documents to search")
    ids = {text: str(i) for i, text in enumerate(pool)}
    index = BM25Index.build(list(ids.values()), pool)
    original_scores: dict[str, float] = {}

    def score(text: str, relevant: set[str]) -> float:
        return ndcg_at_10(index.search(text, k=10).doc_ids, relevant)

    def bm25_reward(completions: Sequence[Any], query: Sequence[str], positives: Sequence[Sequence[str]],
                    think: Sequence[bool] | None = None, **_: Any) -> list[float]:
        flags = think if think is not None else [False] * len(completions)
        rewards = []
        for completion, original, docs, flag in zip(completions, query, positives, flags):
            rewrite = rewrite_of(completion, bool(flag))
            if rewrite is None or not rewrite.strip():
                rewards.append(INVALID_REWRITE_SCORE)
                continue
            relevant = {ids[d] for d in docs if d in ids}
            if original not in original_scores:
                original_scores[original] = score(original, relevant)
            rewards.append(score(rewrite, relevant) - original_scores[original])
        return rewards

    bm25_reward.__name__ = "bm25_ndcg_gain"
    return bm25_reward
