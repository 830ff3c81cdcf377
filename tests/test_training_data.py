"""The training data builders (tsqr_plugins.training.data) in detail, on rows written here: the
filters at their limits, the two samplers, domains as released and fixed, best answers, every H4
file format, the user's JSONL, and the errors each names. tests/test_training.py holds the
end-to-end runs and the released sampler re-run by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tsqr_plugins.errors import InputError, MissingDependencyError
from tsqr_plugins.training import data


def h4_row(qid, question, domain="biology", answers=None, url=None):
    return {"qid": qid, "question": question,
            "metadata": [url or f"https://{domain}.stackexchange.com/questions/{qid}"],
            "answers": [{"text": f"answer {qid}", "pm_score": 1}] if answers is None else answers}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_length_filter_keeps_a_question_of_exactly_the_limit_as_released():
    """build_dataset.py skips ``len(question) > max_length``: 16,000 characters stay."""
    settings = data.SamplingSettings()
    assert settings.keeps("q" * 16_000) and not settings.keeps("q" * 16_001) and not settings.keeps("")
    rows = [h4_row(1, "q" * 16_000), h4_row(2, "q" * 16_001)]
    assert [len(e.query) for e in data.sample_h4(rows, settings)] == [16_000]


def test_the_released_image_filter_drops_png_only_and_the_wide_one_any_image():
    released, wide = data.SamplingSettings(), data.SamplingSettings(image_filter="wide")
    for question, by_released, by_wide in (("See chart.png", False, False), ('<img src="leaf.jpg">', True, False),
                                           ("![a leaf](https://i.stack.imgur.com/x.gif)", True, False),
                                           ("Why are leaves green?", True, True)):
        assert (released.keeps(question), wide.keeps(question)) == (by_released, by_wide), question


def test_domains_are_parsed_as_released_unless_fixed():
    """The released parsing strips characters, not a prefix: physics.stackexchange.com is 'ysics'
    and stackoverflow.com 'ackoverflow'; the fixed one reads the host. Targets match exactly as
    released, case-insensitively when fixed."""
    rows = [h4_row(1, "Why is the sky blue?", "physics"), h4_row(2, "How to sort?", url="https://stackoverflow.com/q/2")]
    assert [e.domain for e in data.sample_h4(rows, data.SamplingSettings(domains=None))] == ["ysics", "ackoverflow"]
    fixed = data.SamplingSettings(domains=None, domain_parsing="fixed")
    assert [e.domain for e in data.sample_h4(rows, fixed)] == ["physics", "stackoverflow"]
    assert not data.SamplingSettings(domains=frozenset({"Physics"})).wanted("physics")
    assert data.SamplingSettings(domains=frozenset({"Physics"}), domain_parsing="fixed").wanted("physics")
    for url, domain in (("https://biology.stackexchange.com/q/1", "biology"), ("https://stackoverflow.com/q/1", "stackoverflow"),
                        ("https://www.example.com/q/1", "unknown"), ("https://example.org/q/1", "unknown"), ("", "unknown")):
        assert data.domain_of({"metadata": [url]}) == domain, url
    assert data.domain_of({}) == "unknown" and data.released_domain_of({}) == ""


def test_the_best_answer_is_the_accepted_else_the_highest_scored_never_an_empty_one():
    assert data.best_answer([{"text": "worse", "pm_score": 2}, {"text": "best", "pm_score": 9}]) == "best"
    assert data.best_answer([{"text": "  ", "pm_score": 50}, {"text": "real", "pm_score": 1}]) == "real"
    assert data.best_answer([{"text": "unscored"}, {"text": "scored", "pm_score": 0.5}]) == "scored"
    assert data.best_answer([{"text": "first", "pm_score": 3}, {"text": "tie", "pm_score": 3}]) == "first"
    assert data.best_answer([{"text": "top", "pm_score": 9}, {"text": "accepted", "selected": True}]) == "accepted"
    assert data.best_answer(["not an answer", {"text": ""}]) is None and data.best_answer(None) is None


@pytest.mark.parametrize("sampler", ["released", "reservoir"])
def test_both_samplers_skip_rows_without_a_question_and_keep_the_question_id(sampler):
    no_id = {key: value for key, value in h4_row(5, "What is xylem?").items() if key != "qid"}
    rows = [h4_row(1, ""), {"qid": 2, "metadata": ["https://biology.stackexchange.com/q/2"]},
            h4_row(3, "Why do leaves fall?"), h4_row(4, "How do roots grow?", answers=[]), no_id]
    settings = data.SamplingSettings(sampler=sampler)
    assert sorted((e.query, e.positives, e.domain, e.qid) for e in data.sample_h4(rows, settings)) == [
        ("What is xylem?", ("answer 5",), "biology", ""), ("Why do leaves fall?", ("answer 3",), "biology", "3")]
    v1 = data.sample_h4(rows, settings, reasoning={"How do roots grow?": "root caps and cell division"})
    assert [(e.query, e.positives, e.qid) for e in v1] == [("How do roots grow?", ("root caps and cell division",), "4")]


def test_the_reservoir_sampler_gives_every_question_the_same_chance():
    """Over 2,000 seeds each question is sampled about as often as any other (1 of 2, 2 of 4: half
    the time); an off-by-one in the reservoir's count skews it towards the first questions."""
    for total, keep in ((2, 1), (4, 2)):
        rows = [h4_row(i, f"question {i}?") for i in range(total)]
        chosen = {f"question {i}?": 0 for i in range(total)}
        for seed in range(2000):
            for example in data.sample_h4(rows, data.SamplingSettings(per_domain=keep, seed=seed, sampler="reservoir")):
                chosen[example.query] += 1
        assert all(abs(count / 2000 - keep / total) < 0.05 for count in chosen.values()), chosen


def test_h4_files_of_every_format_in_a_folder_are_read_and_others_ignored(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    folder = tmp_path / "h4"
    (folder / "more").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", [h4_row(1, "from jsonl?")])
    write_jsonl(folder / "b.json", [h4_row(2, "from json lines?")])
    parquet.write_table(pyarrow.Table.from_pylist([h4_row(i, f"from parquet {i}?") for i in range(300)]),
                        folder / "more" / "c.parquet")
    (folder / "README.md").write_text("not data\n")
    questions = [row["question"] for row in data.iter_h4_rows(str(folder))]
    assert questions == ["from jsonl?", "from json lines?", *(f"from parquet {i}?" for i in range(300))]
    assert [row["question"] for row in data.iter_h4_rows(str(folder / "a.jsonl"))] == ["from jsonl?"]
    with pytest.raises(InputError, match=f"^no H4 files \\(.parquet, .jsonl\\) at {tmp_path / 'none'}$"):
        list(data.iter_h4_rows(str(tmp_path / "none")))
    (folder / "a.jsonl").write_text(json.dumps(h4_row(1, "fine")) + "\n\n{not json\n")
    with pytest.raises(InputError, match=r"a\.jsonl:3: not valid JSON \(Expecting property name"):
        list(data.iter_h4_rows(str(folder / "a.jsonl")))


def test_the_hub_dump_is_streamed_never_downloaded_whole(monkeypatch):
    """`--h4 hub`: datasets.load_dataset(HuggingFaceH4/stack-exchange-preferences, split train,
    streaming). The datasets library is replaced by a recorder: the call is what is checked."""
    calls = []

    class Datasets:
        @staticmethod
        def load_dataset(*args, **kwargs):
            calls.append((args, kwargs))
            return iter([h4_row(1, "streamed?")])

    monkeypatch.setitem(sys.modules, "datasets", Datasets)
    for source in (None, data.H4_DATASET):
        assert [row["question"] for row in data.iter_h4_rows(source)] == ["streamed?"]
    assert calls == [(("HuggingFaceH4/stack-exchange-preferences",), {"split": "train", "streaming": True})] * 2


@pytest.mark.parametrize("module, call, extra, purpose", [
    ("datasets", lambda tmp: list(data.iter_h4_rows(None)), "train", "reading the Stack Exchange dump from the hub"),
    ("pyarrow.parquet", lambda tmp: list(data.iter_h4_rows(str(tmp / "x.parquet"))), "eval", "reading parquet files"),
    ("pyarrow", lambda tmp: data.write_parquet([{"query": "q"}], tmp / "out.parquet"), "eval", "writing the training data"),
])
def test_a_missing_library_names_the_extra_that_brings_it(module, call, extra, purpose, tmp_path, monkeypatch):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, module, None)  # as when it is not installed
    with pytest.raises(MissingDependencyError) as error:
        call(tmp_path)
    assert str(error.value).startswith(f"{purpose} needs the Python package '{module}'")
    assert f"pip install -e '.[{extra}]'" in str(error.value)


def test_the_users_jsonl_keeps_its_domains_and_ids_and_names_each_bad_line(tmp_path, caplog):
    rows = tmp_path / "mine.jsonl"
    rows.write_text('{"query": "q1", "positives": ["d1"], "domain": "bio", "id": "a"}\n\n'
                    '{"query": "' + "x" * 11 + '", "positives": ["d"]}\n'
                    '{"query": "' + "y" * 12 + '", "positive": "d"}\n'
                    '{"query": "' + "z" * 10 + '", "positive": "d"}\n'
                    '{"query": "q2", "positive": "d2"}\n')
    examples = data.read_user_jsonl(rows, max_query_chars=10)
    assert [(e.query, e.positives, e.domain, e.qid) for e in examples] == [
        ("q1", ("d1",), "bio", "a"), ("z" * 10, ("d",), "", "5"), ("q2", ("d2",), "", "6")]
    assert "mine.jsonl: 2 queries longer than 10 characters left out (--max-query-chars)" in caplog.text
    for bad, message in (('{"query": "q", "positives": ["d"]}\n{oops\n', "mine.jsonl:2: not valid JSON"),
                         ('\n["q"]\n', "mine.jsonl:2: a line must be a JSON object, got list"),
                         ('{"query": "q", "positives": [1]}\n', "mine.jsonl:1: 'positives' must be a non-empty list"),
                         ('{"query": "q", "positives": ["  "]}\n', "mine.jsonl:1: 'positives' must be a non-empty list"),
                         ('{"query": " ", "positives": ["d"]}\n', "mine.jsonl:1: 'query' must be a non-empty string"),
                         ("\n", "mine.jsonl holds no examples$"),
                         ('{"query": "too long", "positives": ["d"]}\n',
                          "mine.jsonl holds no examples of at most 3 characters$")):
        rows.write_text(bad)
        with pytest.raises(InputError, match=message):
            data.read_user_jsonl(rows, max_query_chars=3 if "too long" in bad else None)


def test_records_default_to_the_released_prompt_and_name_unknown_families(tmp_path):
    from tsqr_plugins.prompts import get_prompt

    example = data.Example("Why do moths circle lamps?", ("transverse orientation",), "biology", "7")
    (record,) = data.to_records([example])
    assert record == {"prompt": get_prompt("tsqr-train-released").messages(example.query), "query": example.query,
                      "positives": ["transverse orientation"], "think": False, "domain": "biology", "qid": "7"}
    with pytest.raises(InputError, match=r"unknown training prompt 'ours'; choose one of \['eval', 'released'\]"):
        data.to_records([example], prompt_family="ours")
    output = data.write_parquet([record], tmp_path / "new" / "folder" / "train.parquet")  # folders made
    assert output.is_file() and [p.name for p in output.parent.iterdir()] == ["train.parquet"]
    with pytest.raises(InputError, match="^no examples left after filtering; loosen --per-domain/--max-query-chars/--domains$"):
        data.write_parquet([], tmp_path / "empty.parquet")


def test_settings_name_the_choices_of_a_wrong_value():
    for name, value, choices in (("sampler", "shuffle", "released, reservoir"), ("domain_parsing", "host", "released, fixed"),
                                 ("image_filter", "all", "released, wide")):
        with pytest.raises(InputError, match=f"^{name} must be one of {choices}, got '{value}'$"):
            data.SamplingSettings(**{name: value})
