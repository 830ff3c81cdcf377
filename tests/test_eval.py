"""`tsqr eval` end to end: the shipped sample, BEIR and BRIGHT-layout folders, reports, errors."""

from __future__ import annotations

import json
import math

import pytest

from tsqr_plugins.cli import main

pytest.importorskip("ir_measures", reason="tsqr eval needs the 'eval' extra")
from tsqr_plugins.eval.datasets import load_tasks, sample_dir  # noqa: E402
from tsqr_plugins.eval.metrics import evaluate  # noqa: E402

SAMPLE_REWRITES = str(sample_dir() / "rewrites.json")


def run_eval(*args):
    return main(["eval", "--quiet", *map(str, args)])


def test_sample_with_published_style_rewrites(tmp_path):
    out = tmp_path / "run"
    assert run_eval("--dataset", "sample", "--rewriter", f"file:{SAMPLE_REWRITES}", "--output", out) == 0
    results = json.loads((out / "results.json").read_text())
    tasks = ["biology", "economics", "robotics", "stackoverflow", "sustainable_living", "aops"]
    assert sorted(results["tasks"]) == sorted(tasks)
    embedded = results["results"]["embedded"]
    for variant in ("original", "rewritten"):
        for task in tasks:
            metrics = embedded[variant][task]["metrics"]
            assert set(metrics) == {"nDCG@10", "Recall@10", "Recall@100", "MAP@100", "MRR@10"}
            assert all(0 <= v <= 1 for v in metrics.values())
            assert len(embedded[variant][task]["per_query"]) == 1
    mean = {v: sum(embedded[v][t]["metrics"]["nDCG@10"] for t in tasks) / 6 for v in embedded}
    assert mean["rewritten"] > mean["original"]  # the sample's rewrites name what the gold documents say
    report = (out / "report.md").read_text()
    assert "| retriever | queries | Bio | Econ | Rob | Stack | Sus | AoPS | Avg |" in report
    assert "| biology | 1 | 33 | 0 | the tsqr sample |" in report  # where each task came from
    assert {info["source"] for info in results["tasks"].values()} == {"the tsqr sample"}
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # TREC runs: one per backend, variant and task, ranks from 1, excluded ids absent.
    lines = (out / "runs" / "embedded.original.stackoverflow.trec").read_text().splitlines()
    qid, q0, doc, rank, score, tag = lines[0].split()
    assert (q0, rank, tag) == ("Q0", "1", "tsqr-embedded-original")
    assert not any("duplicate_question" in line for line in lines)
    assert len(lines) == 33 - 1  # every document but the excluded one


def write_beir(folder, docs, queries, qrels):
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n"
                                                 for i, t in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n"
                                                  for i, t in queries.items()))
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, ds in qrels.items() for d, s in ds.items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")


def test_beir_folder_with_hand_checkable_metrics(tmp_path):
    data = tmp_path / "mini"
    write_beir(
        data,
        docs={"d1": "apple orchards in autumn", "d2": "pear trees", "d3": "citrus groves", "d4": "bananas"},
        queries={"q1": "apple", "q2": "grapes", "q3": "not judged"},
        qrels={"q1": {"d1": 1}, "q2": {"d3": 1}},
    )
    out = tmp_path / "out"
    assert run_eval("--dataset", data, "--output", out) == 0
    results = json.loads((out / "results.json").read_text())
    per_query = results["results"]["embedded"]["original"]["mini"]["per_query"]
    assert set(per_query) == {"q1", "q2"}  # unjudged queries are not run
    assert per_query["q1"]["nDCG@10"] == 1.0
    # q2 matches nothing: all four documents score 0. trec_eval (hence BRIGHT's numbers) breaks
    # score ties by document id, descending: d4, d3, d2, d1 puts d3 second.
    assert per_query["q2"]["nDCG@10"] == pytest.approx(1 / math.log2(3))
    assert per_query["q2"]["MRR@10"] == pytest.approx(1 / 2)
    assert "rewritten" not in results["results"]["embedded"]
    assert results["tasks"]["mini"]["source"] == f"BEIR folder {data}"


def test_queries_missing_from_a_run_count_as_zero():
    means, per_query = evaluate({"q1": {"d1": 1}, "q2": {"d2": 1}}, {"q1": {"d1": 1.0}})
    assert per_query["q2"]["nDCG@10"] == 0.0
    assert means["nDCG@10"] == 0.5


def test_bright_layout_parquet_copy_limit_and_compare(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    root = tmp_path / "BRIGHT"
    for config in ("examples", "documents", "long_documents"):
        (root / config).mkdir(parents=True)
    docs = [{"id": f"doc{i}", "content": text} for i, text in
            enumerate(["heat pumps move heat", "solar panels", "heat pumps explained again", "wind"])]
    pq.write_table(pa.Table.from_pylist(docs), root / "documents" / "sustainable_living-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(docs[:2]), root / "long_documents" / "sustainable_living-00000-of-00001.parquet")
    examples = [
        {"id": "0", "query": "how do heat pumps work", "reasoning": "", "excluded_ids": ["doc2"],
         "gold_ids": ["doc0"], "gold_ids_long": ["doc1"], "gold_answer": ""},
        {"id": "1", "query": "solar", "reasoning": "", "excluded_ids": ["N/A"],
         "gold_ids": ["doc1"], "gold_ids_long": ["doc1"], "gold_answer": ""},
    ]
    pq.write_table(pa.Table.from_pylist(examples), root / "examples" / "sustainable_living-00000-of-00001.parquet")

    (task,) = load_tasks("bright:sustainable_living", bright_dir=root)
    assert task.excluded == {"0": {"doc2"}, "1": set()}
    (long_task,) = load_tasks("bright:sustainable_living", bright_dir=root, long_context=True)
    assert long_task.doc_ids == ["doc0", "doc1"] and long_task.qrels["0"] == {"doc1": 1}

    out_a, out_b = tmp_path / "a", tmp_path / "b"
    assert run_eval("--dataset", "bright:sustainable_living", "--bright-dir", root, "--output", out_a) == 0
    assert run_eval("--dataset", root, "--limit", 1, "--output", out_b) == 0
    run_a = (out_a / "runs" / "embedded.original.sustainable_living.trec").read_text()
    assert "doc2" not in [line.split()[2] for line in run_a.splitlines() if line.startswith("0 ")]
    limited = json.loads((out_b / "results.json").read_text())
    assert limited["tasks"]["sustainable_living"]["queries"] == 1
    assert main(["compare", str(out_a), str(out_b), "--output", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "report.md").read_text()
    assert "| run | retriever | queries | Sus | Avg |" in table
    assert "| a | embedded | original |" in table and "| b | embedded | original |" in table
    # the old spelling still works for one release, and says what replaced it
    assert main(["eval", "--compare", str(out_a), str(out_b), "--output", str(tmp_path / "old")]) == 0
    assert (tmp_path / "old" / "report.md").read_text() == table


def test_clear_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TSQR_BRIGHT_DIR", raising=False)
    assert run_eval("--dataset", "bright:biologyy", "--output", tmp_path / "x") == 2
    assert "valid: biology, earth_science" in capsys.readouterr().err
    assert run_eval("--dataset", tmp_path / "nowhere", "--output", tmp_path / "x") == 2
    assert "neither 'sample'" in capsys.readouterr().err
    assert run_eval("--dataset", "bright:biology", "--output", tmp_path / "x") == 2
    assert "--bright-dir" in capsys.readouterr().err  # offline: says how to get the data
    assert run_eval("--dataset", "sample", "--retriever", "lucene9", "--output", tmp_path / "x") == 2
    assert "valid: dense, elasticsearch, embedded, opensearch, pyserini" in capsys.readouterr().err
    assert run_eval("--dataset", "sample", "--rewriter", "file:/no/such.json", "--output", tmp_path / "x") == 2
    bad = tmp_path / "bad"
    write_beir(bad, {"d1": "x"}, {"q1": "x"}, {"q1": {"d1": 1}})
    (bad / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\nnot json\n')
    assert run_eval("--dataset", bad, "--output", tmp_path / "x") == 2
    assert "corpus.jsonl:2: not valid JSON" in capsys.readouterr().err


def test_transformers_rewriter_end_to_end(tiny_model, tmp_path):
    out = tmp_path / "tiny"
    code = run_eval("--dataset", "sample", "--rewriter", "transformers", "--model", tiny_model,
                    "--device", "cpu", "--max-tokens", 16, "--limit", 1, "--output", out)
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]["embedded"]) == {"original", "rewritten"}
    assert results["rewriter"] == "transformers"


def test_malformed_bright_rows_name_the_missing_field(tmp_path, capsys):
    root = tmp_path / "BRIGHT"
    (root / "examples").mkdir(parents=True)
    (root / "documents").mkdir()
    (root / "examples" / "pony.jsonl").write_text(json.dumps({"id": "1", "query": "q"}) + "\n")
    (root / "documents" / "pony.jsonl").write_text(json.dumps({"id": "d", "content": "c"}) + "\n")
    assert run_eval("--dataset", "bright:pony", "--bright-dir", root, "--output", tmp_path / "x") == 2
    assert "lacks a field" in capsys.readouterr().err


def test_the_samples_report_says_its_texts_are_ours(tmp_path):
    out = tmp_path / "run"
    assert run_eval("--dataset", "sample", "--rewriter", f"file:{SAMPLE_REWRITES}", "--output", out) == 0
    assert "written by the tsqr authors" in (out / "report.md").read_text()


def test_an_output_folder_with_results_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    args = ("--dataset", "sample", "--rewriter", f"file:{SAMPLE_REWRITES}", "--output", out)
    assert run_eval(*args) == 0
    stale = out / "runs" / "old-experiment.trec"
    stale.write_text("q 0 d 1 1.0 old\n")
    assert run_eval(*args) == 2
    assert "--overwrite" in capsys.readouterr().err and stale.exists()
    assert run_eval(*args, "--overwrite") == 0
    assert not stale.exists() and (out / "results.json").is_file()


def test_rewriter_errors_name_the_rewriter_flag(tmp_path, capsys):
    assert run_eval("--dataset", "sample", "--rewriter", "transformers", "--output", tmp_path / "x") == 2
    assert "--rewriter transformers needs --model" in capsys.readouterr().err


def test_a_task_without_texts_runs_only_on_pyserini(tmp_path):
    """BRIGHT from pyserini's resources holds document ids but no texts: a backend that must index
    the texts, or the rewrite gain, is refused before anything is written."""
    from dataclasses import replace

    from tsqr_plugins.errors import InputError
    from tsqr_plugins.eval.runner import EvalSettings, run_eval

    task = replace(load_tasks("sample")[0], documents=[], source="pyserini 1.6.0")
    with pytest.raises(InputError, match="hold no document texts; embedded needs them"):
        run_eval([task], EvalSettings(retrievers=["pyserini", "embedded"], output=tmp_path / "out"))
    with pytest.raises(InputError, match="the rewrite gain needs them"):
        run_eval([task], EvalSettings(retrievers=["pyserini"], output=tmp_path / "out"), gain_encoder=lambda texts: texts)
    assert not (tmp_path / "out").exists()


def test_the_plain_ndcg_is_trec_evals():
    """measures.ndcg_at_k (the training reward's) equals the ir-measures nDCG@10 tsqr eval reports,
    on generated rankings without tied scores and graded judgements."""
    import random

    from tsqr_plugins.eval.metrics import evaluate
    from tsqr_plugins.measures import ndcg_at_k

    rng = random.Random(7)
    for trial in range(200):
        docs = [f"d{i}" for i in range(rng.randint(1, 30))]
        ranked = rng.sample(docs, len(docs))
        qrels = {doc: rng.choice([0, 0, 1, 2, 3]) for doc in rng.sample(docs, rng.randint(1, len(docs)))}
        run = {doc: float(len(ranked) - rank) for rank, doc in enumerate(ranked)}
        means, _ = evaluate({"q": qrels}, {"q": run})
        assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(means["nDCG@10"], abs=1e-9), (trial, ranked, qrels)


def test_an_option_no_chosen_retriever_takes_is_refused_not_dropped(tmp_path, capsys):
    """--dense-index with --retriever embedded was ignored without a word (issue 22)."""
    from tsqr_plugins.cli import main

    args = ["eval", "--dataset", "sample", "--rewriter", "none", "--output", str(tmp_path / "out"), "--quiet"]
    assert main([*args, "--retriever", "embedded", "--dense-index", "hnsw"]) == 2
    assert "--dense-index applies to the dense retriever" in capsys.readouterr().err


def test_mrr_counts_the_first_relevant_document_within_ten_ranks_only():
    """MRR@10 (BRIGHT's column): 1/rank of the first relevant document if it is in the top 10,
    else 0; the same per query as ir-measures' own RR@10 (trec_eval's recip_rank cut at 10)."""
    import ir_measures

    ranked = [f"d{rank:02d}" for rank in range(1, 13)]  # d01 first ... d12 twelfth, no tied scores
    run = {doc: float(100 - rank) for rank, doc in enumerate(ranked)}
    qrels = {"first": {"d01": 1}, "third": {"d03": 2, "d11": 1}, "tenth": {"d10": 1}, "eleventh": {"d11": 1},
             "twelfth": {"d12": 3}, "unranked": {"elsewhere": 1}}
    means, per_query = evaluate(qrels, {query: run for query in qrels})
    expected = {"first": 1.0, "third": 1 / 3, "tenth": 0.1, "eleventh": 0.0, "twelfth": 0.0, "unranked": 0.0}
    assert {query: values["MRR@10"] for query, values in per_query.items()} == pytest.approx(expected)
    assert means["MRR@10"] == pytest.approx(sum(expected.values()) / len(expected))
    reference = {m.query_id: m.value for m in ir_measures.iter_calc([ir_measures.RR @ 10], qrels,
                                                                     {query: run for query in qrels})}
    assert reference == pytest.approx(expected)


def test_a_run_without_results_scores_zero_and_unjudged_queries_change_nothing():
    """No result at all for any judged query (the rewriter or engine failed everywhere): every
    measure is 0, never a perfect score; a run's unjudged queries and empty result lists are ignored."""
    zeros = {label: 0.0 for label in ("nDCG@10", "Recall@10", "Recall@100", "MAP@100", "MRR@10")}
    assert evaluate({"q1": {"d1": 1}, "q2": {"d2": 2}}, {}) == (zeros, {"q1": zeros, "q2": zeros})
    assert evaluate({"q1": {"d1": 1}}, {"q1": {}, "unjudged": {"d1": 1.0}}) == (zeros, {"q1": zeros})


def test_ndcg_at_k_cuts_at_ten_unless_told():
    from tsqr_plugins.measures import ndcg_at_k

    ranked = [f"d{rank}" for rank in range(1, 13)]
    assert ndcg_at_k(ranked, {"d10": 1}) == pytest.approx(1 / math.log2(11))
    assert ndcg_at_k(ranked, {"d11": 1}) == 0.0 and ndcg_at_k(ranked, {"d11": 1}, 11) > 0
    assert ndcg_at_k(ranked, {"d3": -1, "d4": 0}) == 0.0  # nothing relevant: 0, not a division by zero


def test_metrics_without_ir_measures_name_the_eval_extra(monkeypatch):
    from tsqr_plugins.errors import MissingDependencyError

    monkeypatch.setitem(__import__("sys").modules, "ir_measures", None)  # as when it is not installed
    with pytest.raises(MissingDependencyError) as error:
        evaluate({"q1": {"d1": 1}}, {"q1": {"d1": 1.0}})
    assert str(error.value).startswith("computing retrieval metrics needs the Python package 'ir_measures'")
    assert "pip install -e '.[eval]'" in str(error.value)
