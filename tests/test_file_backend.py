import json
import random

import pytest

from tsqr_plugins import Rewriter
from tsqr_plugins.backends.file import FileBackend
from tsqr_plugins.cli import main
from tsqr_plugins.errors import InputError


def test_the_file_backend_replays_the_published_7b_file_unchanged(published_7b):
    """A lookup in the file it reads: what it shows is that replaying changes no text (no stripping,
    no re-parsing) and keeps each original query; it is not a reproduction of the model."""
    published = json.loads(published_7b.read_text(encoding="utf-8"))
    sample = random.Random(7).sample(sorted(published), 60)
    results = Rewriter(FileBackend(published_7b)).rewrite_batch(sample)
    assert [r.text for r in results] == [published[q] for q in sample]
    assert all(r.original == q and not r.fallback for r, q in zip(results, sample))


def test_the_cli_replays_published_text_unchanged(published_7b, tmp_path):
    published = json.loads(published_7b.read_text(encoding="utf-8"))
    sample = random.Random(11).sample(sorted(published), 25)
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"query_id": f"b{i}", "text": q}) + "\n" for i, q in enumerate(sample)))
    output = tmp_path / "rewrites.jsonl"
    assert main(["rewrite", "--rewriter", f"file:{published_7b}", "--input", str(queries), "--output", str(output), "--quiet"]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["text"] for row in rows] == [published[q] for q in sample]
    assert [row["query_id"] for row in rows] == [f"b{i}" for i in range(25)]
    assert set(rows[0]) == {"query_id", "original", "text", "fallback", "model", "prompt_id"}


def test_our_jsonl_output_replays_through_the_file_backend(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(
        json.dumps({"query_id": "1", "original": "q one", "text": "r one", "fallback": False}) + "\n"
        + json.dumps({"query_id": "2", "original": "q two", "text": "q two", "fallback": True}) + "\n"
    )
    backend = FileBackend(path, on_missing="fallback")
    results = Rewriter(backend).rewrite_batch(["q one", "q two"])
    assert results[0].text == "r one"
    assert results[1].fallback  # a fallback row holds no rewrite, so it is not replayed as one


def test_one_line_queries_match_multi_line_published_queries(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"Title line\nbody  text": "rewrite"}))
    assert Rewriter(FileBackend(path)).rewrite("Title line body text").text == "rewrite"


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('["a", "b"]', "expected a JSON object"),
    ('{"q": 3}', "JSON object mapping"),
])
def test_malformed_rewrite_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / ("r.jsonl" if content.startswith("[") else "r.json")
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        FileBackend(path)


def test_missing_rewrite_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        FileBackend(tmp_path / "absent.json")
