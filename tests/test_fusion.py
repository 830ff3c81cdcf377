"""Reciprocal rank fusion and `tsqr eval --combine`: the fused rankings equal a reference written
from the RRF paper's formula, and the modes are scored side by side with a paired test."""

from __future__ import annotations

import json
import random

import pytest

from tsqr_plugins.errors import InputError
from tsqr_plugins.fusion import rrf


def reference_rrf(rankings: list[list[str]], k: float, weights: list[float]) -> dict[str, float]:
    """Cormack, Clarke and Büttcher (SIGIR 2009), eq. 1: RRFscore(d) = sum over rankings r of
    1 / (k + r(d)), ranks from 1; written here from the formula, with a weight per ranking."""
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for position in range(len(ranking)):
            document = ranking[position]
            scores[document] = scores.get(document, 0.0) + weight * (1.0 / (k + (position + 1)))
    return scores


def test_rrf_equals_the_formula_on_generated_runs():
    rng = random.Random(20261205)
    for _ in range(300):
        documents = [f"d{i}" for i in range(rng.randint(1, 40))]
        runs = []
        for _ in range(rng.randint(1, 4)):
            chosen = rng.sample(documents, rng.randint(0, len(documents)))
            # scores with ties: equal scores rank by document id, descending (trec_eval's order)
            runs.append({doc: float(rng.randint(0, 5)) for doc in chosen})
        k = rng.choice([0, 1, 60, 1000])
        weights = [rng.choice([1.0, 0.5, 2.0]) for _ in runs]
        depth = rng.choice([None, 1, 5, 100])
        # two stable sorts: by id descending, then by score descending (ties keep the id order)
        rankings = [sorted(sorted(run, reverse=True), key=lambda doc, run=run: -run[doc])[:depth] for run in runs]
        expected = reference_rrf(rankings, k, weights)
        got = rrf(runs, k, weights, depth)
        assert got.keys() == expected.keys()
        assert all(abs(got[doc] - expected[doc]) < 1e-12 for doc in expected)


def test_rrf_refuses_what_it_cannot_mean():
    with pytest.raises(InputError, match=r"^the RRF constant k must be >= 0, got -1$"):
        rrf([{"a": 1.0}], k=-1)
    with pytest.raises(InputError, match=r"^1 RRF weights for 2 rankings$"):
        rrf([{"a": 1.0}, {"b": 1.0}], weights=[1.0])


def test_best_first_orders_by_fused_score_and_keeps_first_seen_order_on_ties():
    """The order LlamaIndex, Pyserini and PyTerrier answer a fusion in: score descending, equal
    scores in the order the ids were first seen (the original's list first)."""
    from tsqr_plugins.fusion import best_first, rrf_ranked

    assert best_first({"b": 0.5, "a": 0.25, "c": 0.75}) == ["c", "b", "a"]
    assert best_first({"z": 0.5, "a": 0.5, "m": 0.5}) == ["z", "a", "m"]
    fused = rrf_ranked([["x", "y"], ["y", "x"], ["w"]], 60)  # x and y tie; w ties the firsts
    assert best_first(fused) == ["x", "y", "w"]


def test_eval_scores_the_modes_side_by_side_with_a_paired_test(tmp_path):
    from tests.test_eval import SAMPLE_REWRITES, run_eval

    out = tmp_path / "out"
    assert run_eval("--dataset", "sample", "--rewriter", f"file:{SAMPLE_REWRITES}", "--output", out,
                    "--combine", "replace,concat,rrf") == 0
    document = json.loads((out / "results.json").read_text())
    variants = document["results"]["embedded"]
    assert list(variants) == ["original", "replace", "concat", "rrf"] and document["combine"] == ["replace", "concat", "rrf"]
    # the fused run is the reference fusion of the two runs tsqr eval wrote (their ranks as
    # trec_eval orders them: score descending, equal scores by id descending)
    for task in document["tasks"]:
        runs = {variant: read_trec(out / "runs" / f"embedded.{variant}.{task}.trec") for variant in ("original", "replace", "rrf")}
        for qid, fused in runs["rrf"].items():
            rankings = [sorted(sorted(runs[v].get(qid, {}), reverse=True), key=lambda doc, run=runs[v].get(qid, {}): -run[doc])
                        for v in ("original", "replace")]
            expected = reference_rrf(rankings, 60, [1.0, 1.0])
            assert fused.keys() == expected.keys()
            assert all(abs(fused[doc] - expected[doc]) < 1e-12 for doc in expected)
    significance = document["significance"]["embedded"]
    assert set(significance) == {"replace", "concat", "rrf"}
    assert all(0.0 <= entry["p_value"] <= 1.0 and entry["queries"] > 0 for entry in significance.values())
    report = (out / "report.md").read_text()
    assert "## Against the original queries" in report and "| embedded | rrf |" in report
    assert "file:" in report and "(rrf)" in report


def read_trec(path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, {})[doc] = float(score)
    return run


def test_combine_is_checked_before_any_work(tmp_path, capsys):
    from tests.test_eval import SAMPLE_REWRITES, run_eval

    assert run_eval("--dataset", "sample", "--rewriter", f"file:{SAMPLE_REWRITES}", "--output", tmp_path / "x",
                    "--combine", "replace,fuse") == 2
    assert "unknown --combine mode" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert run_eval("--dataset", "sample", "--output", tmp_path / "x", "--combine", "rrf") == 2
    assert "--combine needs a --rewriter" in capsys.readouterr().err


def test_the_paired_test_agrees_with_the_textbook_statistic():
    import math

    from tsqr_plugins.eval.significance import paired_t_test

    a = [0.5, 0.7, 0.2, 0.9, 0.4, 0.6]
    b = [0.4, 0.5, 0.3, 0.6, 0.4, 0.2]
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    from scipy.stats import t as student

    assert abs(paired_t_test(a, b) - 2 * student.sf(abs(t), n - 1)) < 1e-12
    assert paired_t_test(a, a) == 1.0 and paired_t_test([2.0, 3.0, 5.0], [1.0, 2.0, 4.0]) == 0.0


def test_adaptive_repetition_gives_the_original_a_third_of_the_rewrites_weight():
    from tsqr_plugins.combine import ADAPTIVE_MAX_COPIES, adaptive_copies, combine

    original = "why do moths circle lamps"  # 5 words
    for words, copies in ((0, 1), (10, 1), (15, 1), (30, 2), (150, 10), (1500, 100), (100_000, ADAPTIVE_MAX_COPIES)):
        rewrite = " ".join(["light"] * words)
        assert adaptive_copies(original, rewrite) == copies
        assert combine(original, rewrite, "adaptive") == " ".join([original] * copies + [rewrite])
    # the same text in every host: the Rewrite, the query DSL's leaf text, the service's answer
    from tsqr_plugins.core import Rewrite
    from tsqr_plugins.querydsl import leaf_texts

    rewrite = Rewrite(original=original, text=" ".join(["light"] * 150), fallback=False)
    assert leaf_texts(rewrite, "adaptive", 5) == [combine(original, rewrite.text, "adaptive")]
    capped = leaf_texts(rewrite, "adaptive", 5, tokens=100)[0].split()
    assert len(capped) <= 100 and capped[:5] == original.split()


def test_the_service_answers_adaptive_as_every_host_combines_it(tmp_path):
    pytest.importorskip("uvicorn")
    import httpx

    from tests.test_service import engine_config
    from tsqr_plugins.combine import combine
    from tsqr_plugins.testing.service import RunningService

    query = "Why do moths circle street lamps instead of flying straight to them?\nI watched moths around a lamp last night. They never land on it, they keep spiralling. What makes them do that?"
    with RunningService(engine_config(tmp_path)) as service:
        def ask(**body):
            return httpx.post(f"{service.url}/v1/rewrite", json=body, timeout=30).json()

        alone = ask(queries=[query])["rewrites"][0]
        adaptive = ask(queries=[query], mode="adaptive")["rewrites"][0]
        match = ask(match={"query": query, "boost": 2}, mode="adaptive")["match"]
    assert not alone["fallback"] and not adaptive["fallback"]
    assert adaptive["text"] == combine(query, alone["text"], "adaptive") != alone["text"]
    assert match["query"] == adaptive["text"] and match["boost"] == 2


@pytest.mark.parametrize("k", [-1, float("nan"), float("inf"), "60", True])
def test_the_rank_constant_is_checked_where_rrf_is_set_up_in_every_host(k, tmp_path):
    """Pyserini's RewritingSearcher and LlamaIndex's TongSearchQRRetriever took any rrf_k: NaN scored
    every hit NaN, a negative one raised only at the first search. Checked as TongSearchQRFusion and
    StageSettings check it, at construction."""
    from tsqr_plugins.fusion import check_rrf_k

    with pytest.raises(InputError, match="rrf_k must be a finite number >= 0"):
        check_rrf_k(k)
    assert check_rrf_k(0) == 0 and check_rrf_k(60.5) == 60.5
