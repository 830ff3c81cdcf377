"""The rule for queries longer than the model's context.

A prompt must leave room for ``max_tokens`` of output. When the chat-formatted prompt of a query
is longer than ``context_length - max_tokens`` tokens, the query (only the query: the instructions
stay whole) is cut to the longest head that fits, and a warning is logged. The rewrite keeps the
original, untruncated query. Backends without a tokenizer (``openai``) cut by characters instead
(``max_query_chars``).
"""

from __future__ import annotations

import logging
from typing import Any

from tsqr_plugins.errors import InputError
from tsqr_plugins.prompts import Prompt

logger = logging.getLogger(__name__)


def prompt_length(tokenizer: Any, prompt: Prompt, query: str) -> int:
    ids = tokenizer.apply_chat_template(prompt.messages(query), tokenize=True, add_generation_prompt=True)
    if hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return len(ids)


def fit_query(query: str, prompt: Prompt, tokenizer: Any, context_length: int, max_tokens: int) -> str:
    """``query`` unchanged when its prompt fits, else its longest head (in tokens) that does."""
    room = context_length - max_tokens
    if prompt_length(tokenizer, prompt, query) <= room:
        return query
    overhead = prompt_length(tokenizer, prompt, "")
    keep = room - overhead - 2  # a token or two of slack for merges at the cut
    if keep < 1:
        raise InputError(
            f"context length {context_length} leaves no room for a query with max_tokens={max_tokens} "
            f"and a {overhead}-token prompt; lower max_tokens"
        )
    ids = tokenizer(query, add_special_tokens=False)["input_ids"]
    logger.warning("query of %d tokens truncated to %d tokens to fit the model's context", len(ids), keep)
    return tokenizer.decode(ids[:keep], skip_special_tokens=True)


def fit_query_chars(query: str, max_query_chars: int) -> str:
    if len(query) <= max_query_chars:
        return query
    logger.warning("query of %d characters truncated to %d characters", len(query), max_query_chars)
    return query[:max_query_chars]
