"""The paper's prompts, identified by id, and parsing of the model's completions.

Pure functions: no model, no I/O. The prompt id goes into cache keys and outputs so that
rewrites made with different prompts are never mixed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tsqr_plugins.errors import InputError, UnparseableCompletion

INSTRUCTIONS = (
    "Instructions:\n"
    "1. Identify the essential problem.\n"
    "2. Think step by step to reason and describe what information could be relevant and helpful "
    "to address the questions in detail.\n"
    "3. Draft an answer with as many thoughts as you have.\n"
)
# The user turn of the released evaluation code (bigai-nlco/TongSearch-QR, 2025-09,
# scripts/evaluation/question_rewriting.py line 39).
PAPER_USER_TEMPLATE = INSTRUCTIONS + "Query: {question}\n\n"
# The user turn that produced the published BRIGHT rewrites (../shared/data/tongsearch-qr): the
# evaluation script of 2025-05/06 (Evaluation/run_reasoner_offline.py line 42) had no space.
PUBLISHED_USER_TEMPLATE = INSTRUCTIONS + "Query:{question}\n\n"
# The user turn the released training data carries: the sampler's text verbatim
# (scripts/data_process/sample_stackexchange.py DEFAULT_INSTRUCTION + question).
TRAINING_USER_TEMPLATE = INSTRUCTIONS + "Question: {question}"

# The system prompt of the paper's think mode.
THINK_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. "
    "The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind "
    "and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)

# The think system prompt of the released training builder (scripts/data_process/build_dataset.py)
# and of the 2025-05 evaluation: the same with "respectively".
THINK_SYSTEM_PROMPT_RELEASED = THINK_SYSTEM_PROMPT.replace("</answer> tags, ", "</answer> tags, respectively, ")

THINK_PATTERN = re.compile(r"<think>.*?</think>\s*<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class Prompt:
    """A prompt: how a query becomes chat messages, and how a completion becomes a rewrite.

    Args:
        id: Its name, part of every cache key and output row (e.g. ``"tsqr-v1"``).
        system: The system turn; ``""`` sends an empty one.
        user_template: The user turn, with ``{question}`` where the query goes (verbatim).
        think: Think mode: the rewrite is the ``<answer>`` of ``<think>…</think><answer>…</answer>``;
            otherwise the whole completion.
    """

    id: str
    system: str
    user_template: str
    think: bool = False

    def messages(self, query: str) -> list[dict[str, str]]:
        """Chat messages for one query.

        The system turn is always present, empty when the prompt has none: an empty system turn
        suppresses Qwen2.5's default system prompt, as the released evaluation code does.

        Args:
            query: The search query, inserted as it is (braces and all).
        """
        # str.replace, not str.format: queries contain braces (code, LaTeX).
        user = self.user_template.replace("{question}", query)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def parse(self, completion: str) -> str:
        """The rewrite inside a completion.

        Args:
            completion: The model's text.

        Raises:
            UnparseableCompletion: The completion is empty, or in think mode has no non-empty
                ``<answer>`` after a ``<think>`` block.
        """
        if not completion or not completion.strip():
            raise UnparseableCompletion("the model returned an empty completion")
        if not self.think:
            return completion
        match = THINK_PATTERN.search(completion)
        if match is None or not match.group(1).strip():
            raise UnparseableCompletion(
                "think mode: no <think>…</think><answer>…</answer> in the completion "
                f"(starts {completion[:80]!r})"
            )
        return match.group(1).strip()


PROMPTS: dict[str, Prompt] = {
    "tsqr-v1": Prompt("tsqr-v1", "", PAPER_USER_TEMPLATE, think=False),
    "tsqr-think-v1": Prompt("tsqr-think-v1", THINK_SYSTEM_PROMPT, PAPER_USER_TEMPLATE, think=True),
    # exactly what produced the published BRIGHT rewrites, to regenerate them
    "tsqr-v1-published": Prompt("tsqr-v1-published", "", PUBLISHED_USER_TEMPLATE, think=False),
    "tsqr-think-v1-published": Prompt("tsqr-think-v1-published", THINK_SYSTEM_PROMPT_RELEASED,
                                      PUBLISHED_USER_TEMPLATE, think=True),
    # the released training data's prompts (`tsqr train data` default)
    "tsqr-train-released": Prompt("tsqr-train-released", "", TRAINING_USER_TEMPLATE, think=False),
    "tsqr-think-train-released": Prompt("tsqr-think-train-released", THINK_SYSTEM_PROMPT_RELEASED,
                                        TRAINING_USER_TEMPLATE, think=True),
}
DEFAULT_PROMPT_ID = "tsqr-v1"


def get_prompt(prompt: str | Prompt = DEFAULT_PROMPT_ID) -> Prompt:
    """The prompt ``prompt`` names.

    Args:
        prompt: An id from ``PROMPTS`` (default ``"tsqr-v1"``), or a :class:`Prompt`, returned as it is.

    Raises:
        InputError: An unknown id (the message lists the valid ones).
    """
    if isinstance(prompt, Prompt):
        return prompt
    try:
        return PROMPTS[prompt]
    except KeyError:
        raise InputError(f"unknown prompt id {prompt!r}; choose one of {sorted(PROMPTS)}") from None


def query_from_messages(messages: list[dict[str, str]]) -> str | None:
    """The query inside a conversation built from one of our prompts, else None."""
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    if not users:
        return None
    head, _, tail = PAPER_USER_TEMPLATE.partition("{question}")
    text = users[-1]
    if text.startswith(head) and text.endswith(tail) and len(text) >= len(head) + len(tail):
        return text[len(head) : len(text) - len(tail)]
    return None


def match_conversation(messages: list[dict[str, str]]) -> tuple[str, Prompt] | None:
    """(query, prompt) when ``messages`` is exactly what one of our prompts builds for a query
    (``Prompt.messages``: the same roles, in order, with the same texts), else None. Anything else,
    a missing or reordered system turn, another turn before, another template, is another
    conversation for the model, and must be neither answered from nor stored as ours."""
    if len(messages) != 2 or [m.get("role") for m in messages] != ["system", "user"]:
        return None
    if any(set(m) - {"role", "content"} for m in messages):
        return None
    system, user = messages[0].get("content"), messages[1].get("content")
    for prompt in PROMPTS.values():
        head, _, tail = prompt.user_template.partition("{question}")
        if system != prompt.system or not user.startswith(head) or not user.endswith(tail):
            continue
        query = user[len(head): len(user) - len(tail)] if len(user) >= len(head) + len(tail) else None
        if query and query.strip() and prompt.messages(query) == messages:
            return query, prompt
    return None


def build_messages(query: str, prompt: str | Prompt = DEFAULT_PROMPT_ID) -> list[dict[str, str]]:
    """The chat messages (system, then user) that ask the model to rewrite ``query``.

    Args:
        query: The search query.
        prompt: A prompt id from ``PROMPTS`` (default ``"tsqr-v1"``) or a :class:`Prompt`.
    """
    return get_prompt(prompt).messages(query)


def parse_completion(completion: str, prompt: str | Prompt = DEFAULT_PROMPT_ID) -> str:
    """The rewrite inside a model's completion, see :meth:`Prompt.parse`.

    Args:
        completion: The model's text.
        prompt: The prompt id (default ``"tsqr-v1"``) or :class:`Prompt` that asked for it.

    Raises:
        UnparseableCompletion: There is no rewrite in it.
    """
    return get_prompt(prompt).parse(completion)
