import pytest

from tsqr_plugins import build_messages, get_prompt, parse_completion
from tsqr_plugins.errors import InputError, UnparseableCompletion

PAPER_USER_TURN = (
    "Instructions:\n1. Identify the essential problem.\n2. Think step by step to reason and describe what "
    "information could be relevant and helpful to address the questions in detail.\n3. Draft an answer with "
    "as many thoughts as you have.\nQuery: {question}\n\n"
)


def test_paper_prompt_is_exact_with_an_empty_system_turn():
    messages = build_messages("Why is the sky blue?")
    assert messages == [
        {"role": "system", "content": ""},
        {"role": "user", "content": PAPER_USER_TURN.replace("{question}", "Why is the sky blue?")},
    ]


def test_braces_and_format_fields_in_the_query_are_kept_verbatim():
    query = "def f(x): return {'a': x} {question} {0}"
    assert build_messages(query)[1]["content"].endswith(f"Query: {query}\n\n")


def test_think_prompt_has_the_paper_system_prompt_and_parses_the_answer():
    prompt = get_prompt("tsqr-think-v1")
    assert prompt.messages("q")[0]["content"].startswith("A conversation between User and Assistant.")
    assert "<think> reasoning process here </think> <answer> answer here </answer>" in prompt.system
    assert prompt.parse("<think>step 1\nstep 2</think>\n<answer> the rewrite </answer>") == "the rewrite"


@pytest.mark.parametrize("broken", ["no tags at all", "<think>unfinished", "<think>x</think><answer>cut off", "<think>x</think><answer> </answer>"])
def test_unparseable_think_output_raises_unparseable(broken):
    with pytest.raises(UnparseableCompletion):
        parse_completion(broken, "tsqr-think-v1")


def test_plain_mode_returns_the_completion_unchanged_and_rejects_empty():
    assert parse_completion("  text with spaces \n") == "  text with spaces \n"
    with pytest.raises(UnparseableCompletion):
        parse_completion("   ")


def test_unknown_prompt_lists_valid_ids():
    with pytest.raises(InputError, match="tsqr-v1"):
        get_prompt("nope")


def test_the_published_and_released_prompts_are_their_own_ids():
    """The published BRIGHT rewrites were made with 'Query:{q}' (2025-05 evaluation script), the
    2025-09 release evaluates with 'Query: {q}', its training data say 'Question: {q}': each has its
    own id, so the cache never mixes their rewrites."""
    from tsqr_plugins.prompts import PROMPTS, get_prompt

    user = {pid: get_prompt(pid).messages("Q?")[1]["content"] for pid in PROMPTS}
    assert user["tsqr-v1"].endswith("Query: Q?\n\n") and user["tsqr-v1-published"].endswith("Query:Q?\n\n")
    assert user["tsqr-train-released"].endswith("Question: Q?")
    assert len({(get_prompt(p).system, user[p]) for p in PROMPTS}) == len(PROMPTS)  # no two alike
    assert "respectively" in get_prompt("tsqr-think-v1-published").system
    assert "respectively" not in get_prompt("tsqr-think-v1").system  # as the 2025-09 evaluation script
