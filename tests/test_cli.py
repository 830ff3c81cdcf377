import json
import os
import subprocess
import sys

import pytest

from tsqr_plugins.cli import main
from tests.conftest import SAMPLE


def run_cli(*args):
    return main([str(arg) for arg in args])


def read_rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_sample_demo_command(tmp_path):
    output = tmp_path / "out.jsonl"
    assert run_cli("rewrite", "--rewriter", f"file:{SAMPLE / 'rewrites.json'}", "--input", SAMPLE / "queries.jsonl",
                   "--output", output, "--quiet") == 0
    rows = read_rows(output)
    assert [row["query_id"] for row in rows] == ["q1", "q2", "q3", "q4", "q5", "q6"]
    assert all(not row["fallback"] and row["prompt_id"] == "tsqr-v1" for row in rows)


@pytest.mark.parametrize("name, content, ids", [
    ("q.txt", "alpha?\n\nbeta\n", ["1", "3"]),
    ("q.tsv", "a1\talpha?\nb2\tbeta\n", ["a1", "b2"]),
    ("q.jsonl", '{"query_id": 7, "text": "alpha?"}\n{"qid": "x", "query": "beta"}\n', ["7", "x"]),
])
def test_text_tsv_and_jsonl_inputs(tmp_path, name, content, ids):
    rewrites = tmp_path / "r.json"
    rewrites.write_text(json.dumps({"alpha?": "A", "beta": "B"}))
    (tmp_path / name).write_text(content)
    output = tmp_path / "out.jsonl"
    assert run_cli("rewrite", "--rewriter", f"file:{rewrites}", "--input", tmp_path / name, "--output", output, "--quiet") == 0
    rows = read_rows(output)
    assert [row["query_id"] for row in rows] == ids and [row["text"] for row in rows] == ["A", "B"]


@pytest.mark.parametrize("name, content, message", [
    ("q.jsonl", '{"text": "ok"}\n{broken\n', "q.jsonl:2: not valid JSON"),
    ("q.jsonl", '{"query_id": 1, "text": "   "}\n', "q.jsonl:1: the query text is empty"),
    ("q.tsv", "no tab here\n", "q.tsv:1: expected 'id<TAB>text'"),
    ("q.tsv", "1\ta\n1\tb\n", "appears twice"),
])
def test_bad_inputs_exit_2_naming_file_and_line(tmp_path, capsys, name, content, message):
    (tmp_path / name).write_text(content)
    output = tmp_path / "out.jsonl"
    assert run_cli("rewrite", "--rewriter", f"file:{SAMPLE / 'rewrites.json'}", "--input", tmp_path / name,
                   "--output", output, "--quiet") == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_missing_model_and_unknown_backend_are_clear(tmp_path, capsys):
    assert run_cli("rewrite", "--rewriter", "transformers", "--input", SAMPLE / "queries.jsonl", "--output", tmp_path / "o") == 2
    assert "needs --model" in capsys.readouterr().err
    assert run_cli("rewrite", "--rewriter", "llamacpp", "--input", SAMPLE / "queries.jsonl", "--output", tmp_path / "o") == 2
    assert "choose one of" in capsys.readouterr().err


def test_transformers_rewrite_resumes_from_the_cache(tiny_model, tmp_path, capsys):
    queries = tmp_path / "q.txt"
    queries.write_text("why do moths fly to light\nsort a dict in python\nwhat is inflation\n")
    args = ["rewrite", "--rewriter", "transformers", "--model", tiny_model, "--device", "cpu", "--max-tokens", "12",
            "--input", queries, "--cache", tmp_path / "cache.sqlite", "--batch-size", "2"]
    assert run_cli(*args, "--output", tmp_path / "first.jsonl") == 0
    assert "0 from the cache" in capsys.readouterr().err
    assert run_cli(*args, "--output", tmp_path / "second.jsonl") == 0
    assert "3 from the cache" in capsys.readouterr().err
    first, second = read_rows(tmp_path / "first.jsonl"), read_rows(tmp_path / "second.jsonl")
    assert first == second  # sampled at temperature 0.7: identical only because nothing was regenerated
    assert first[0]["model"] == str(tiny_model.resolve()) and first[0]["original"] == "why do moths fly to light"


def test_concat_mode_output(tmp_path):
    rewrites = tmp_path / "r.json"
    rewrites.write_text(json.dumps({"q": "R"}))
    (tmp_path / "q.txt").write_text("q\n")
    run_cli("rewrite", "--rewriter", f"file:{rewrites}", "--input", tmp_path / "q.txt", "--output", tmp_path / "o.jsonl",
            "--mode", "concat", "--repeat", "2", "--quiet")
    assert read_rows(tmp_path / "o.jsonl")[0]["text"] == "q q R"


def test_env_reports_backends_as_json_and_text():
    result = subprocess.run([sys.executable, "-m", "tsqr_plugins.cli", "env", "--json", "--base-url", "http://127.0.0.1:9/v1"],
                            capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    assert set(report["backends"]) == {"transformers", "vllm", "vllm-async", "openai", "replicas", "file"}
    assert report["backends"]["file"] == "usable"
    assert "not answering" in report["servers"]["openai-compatible"]
    text = subprocess.run([sys.executable, "-m", "tsqr_plugins.cli", "env", "--base-url", "http://127.0.0.1:9/v1"],
                          capture_output=True, text=True, check=True).stdout
    assert "rewriters:" in text and "extras:" in text


def test_progress_bar_goes_to_stderr_and_quiet_silences_it(tmp_path):
    command = [sys.executable, "-m", "tsqr_plugins.cli", "rewrite", "--rewriter", f"file:{SAMPLE / 'rewrites.json'}",
               "--input", str(SAMPLE / "queries.jsonl"), "--output", str(tmp_path / "o.jsonl")]
    loud = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "rewriting" in loud.stderr and loud.stdout == ""
    quiet = subprocess.run(command + ["--quiet", "--overwrite"], capture_output=True, text=True, check=True)
    assert quiet.stderr == "" and quiet.stdout == ""


def test_outputs_that_would_lose_data_or_fail_late_are_refused_before_any_work(tmp_path, capsys):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"query_id": "1", "text": "Why do moths circle street lamps?"}\n')
    original = queries.read_text()
    backend = f"file:{SAMPLE / 'rewrites.json'}"
    (tmp_path / "sub").mkdir()
    (tmp_path / "afile").write_text("x")
    for output, message in ((queries, "is the input file"), (tmp_path / "sub" / ".." / "q.jsonl", "is the input file"),
                            (tmp_path / "sub", "is a directory"), (tmp_path / "afile" / "out.jsonl", "is a file")):
        assert run_cli("rewrite", "--rewriter", backend, "--input", queries, "--output", output, "--quiet",
                       "--on-missing", "fallback") == 2, output
        assert message in capsys.readouterr().err
    assert queries.read_text() == original
    # an existing output is replaced only when asked, as tsqr eval's result folder (one rule)
    done = tmp_path / "done.jsonl"
    done.write_text("earlier results\n")
    args = ("rewrite", "--rewriter", backend, "--input", queries, "--output", done, "--quiet", "--on-missing", "fallback")
    assert run_cli(*args) == 2 and "--overwrite" in capsys.readouterr().err
    assert done.read_text() == "earlier results\n"
    assert run_cli(*args, "--overwrite") == 0 and done.read_text() != "earlier results\n"


def test_unreadable_inputs_are_clear(tmp_path, capsys):
    backend = f"file:{SAMPLE / 'rewrites.json'}"
    latin1 = tmp_path / "q.txt"
    latin1.write_bytes("caf\xe9 au lait?\n".encode("latin-1"))
    assert run_cli("rewrite", "--rewriter", backend, "--input", latin1, "--output", tmp_path / "o.jsonl") == 2
    assert "q.txt:1: not UTF-8" in capsys.readouterr().err
    assert run_cli("rewrite", "--rewriter", backend, "--input", tmp_path, "--output", tmp_path / "o.jsonl") == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_lone_surrogate_query_is_written_not_crashed_on(tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"query_id": "1", "text": "moths \\ud800 lamps"}\n')
    output = tmp_path / "o.jsonl"
    assert run_cli("rewrite", "--rewriter", f"file:{SAMPLE / 'rewrites.json'}", "--on-missing", "fallback",
                   "--input", queries, "--output", output, "--quiet") == 0
    (row,) = read_rows(output)
    assert row["original"] == "moths \ud800 lamps" and row["fallback"] is True
    assert not (tmp_path / "o.jsonl.partial").exists()


def test_a_timed_out_transformers_generation_is_stopped_and_the_process_exits_cleanly(tiny_model, tmp_path):
    """--timeout falls back at the deadline; the abandoned generation must stop too, or the
    interpreter exits under a running torch thread ("terminate called...", exit 134)."""
    queries = tmp_path / "q.txt"
    queries.write_text("why do moths fly to light\n")
    output = tmp_path / "o.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "tsqr_plugins.cli", "rewrite", "--rewriter", "transformers", "--model", str(tiny_model),
         "--device", "cpu", "--max-tokens", "800", "--timeout", "0.3", "--no-cache", "--quiet",
         "--input", str(queries), "--output", str(output)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "terminate called" not in done.stderr
    (row,) = read_rows(output)
    assert row["fallback"] is True


@pytest.mark.parametrize("url, message", [
    ("127.0.0.1:1", "must start with http:// or https://"),
    ("http://127.0.0.1:1", "is unreachable"),
])
def test_an_unreachable_or_schemeless_engine_url_is_one_line(url, message, tmp_path):
    """A new user's report: `tsqr eval --retriever elasticsearch:<url>` printed a 60-line httpx traceback."""
    done = subprocess.run([sys.executable, "-m", "tsqr_plugins.cli", "eval", "--dataset", "sample", "--retriever",
                           f"elasticsearch:{url}", "--rewriter", "none", "--output", str(tmp_path / "out"), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-1000:]
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 3
