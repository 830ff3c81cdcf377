"""One word per concept (issue 22): a rewriter produces rewrites (--rewriter), a retriever searches
(--retriever), a search node is an Elasticsearch/OpenSearch URL (--search-node), an upstream is a
model server behind tsqr serve (--upstream). The old spellings work for one release, exactly as
before, with a warning naming the new one; these are the only tests that still use them."""

from __future__ import annotations

import json
import logging

import pytest

from tsqr_plugins.cli import build_parser, main
from tsqr_plugins.errors import InputError
from tsqr_plugins.service import ServiceConfig
from tests.conftest import SAMPLE

REWRITES = str(SAMPLE / "rewrites.json")

# command, the old spelling, the new one, a value, the other arguments the command needs
RENAMED = [
    ("rewrite", "--backend", "--rewriter", f"file:{REWRITES}", ["--input", "q.jsonl", "--output", "o.jsonl"]),
    ("proxy", "--backend", "--rewriter", f"file:{REWRITES}", ["--search-node", "http://127.0.0.1:9200"]),
    ("proxy", "--upstream", "--search-node", "http://127.0.0.1:9200", []),
    ("proxy", "--upstream-timeout", "--search-node-timeout", "5", ["--search-node", "http://127.0.0.1:9200"]),
    ("eval", "--backend", "--retriever", "embedded,pyserini", []),
    ("serve", "--engine", "--rewriter", "openai", []),
]
IDS = [f"{command} {old}" for command, old, *_ in RENAMED]


@pytest.mark.parametrize("command, old, new, value, rest", RENAMED, ids=IDS)
def test_an_old_flag_parses_as_the_new_one_with_a_warning_naming_it(command, old, new, value, rest, capsys):
    with_new = vars(build_parser().parse_args([command, new, value, *rest]))
    assert capsys.readouterr().err == ""
    with_old = vars(build_parser().parse_args([command, old, value, *rest]))
    warning = capsys.readouterr().err
    assert with_old == with_new
    assert warning.startswith(f"tsqr: warning: {old} is deprecated, use {new}") and warning.count("\n") == 1


@pytest.mark.parametrize("command, old, new, value, rest", RENAMED, ids=IDS)
def test_both_spellings_at_once_are_refused(command, old, new, value, rest, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, new, value, old, value, *rest])
    assert exit_.value.code == 2 and f"argument {old}: not allowed with argument {new}" in capsys.readouterr().err


@pytest.mark.parametrize("command, old, new", [("rewrite", "--backend", "--rewriter"), ("proxy", "--backend", "--rewriter"),
                                               ("proxy", "--upstream", "--search-node"),
                                               ("proxy", "--upstream-timeout", "--search-node-timeout"),
                                               ("eval", "--backend", "--retriever"), ("serve", "--engine", "--rewriter")])
def test_help_shows_the_new_names_only(command, old, new, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    shown = capsys.readouterr().out
    assert f"{new} " in shown
    assert not any(word.strip("[],.`") == old for word in shown.split()), f"{old} is in tsqr {command} --help"


def test_index_keeps_engine_the_search_engine_product(capsys):
    with pytest.raises(SystemExit):
        main(["index", "--help"])
    assert "--engine {elasticsearch,opensearch}" in capsys.readouterr().out


def test_a_required_flag_is_satisfied_by_either_spelling_and_missing_names_the_new_one(capsys):
    assert build_parser().parse_args(["proxy", "--upstream", "http://127.0.0.1:9200"]).search_node
    capsys.readouterr()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rewrite", "--input", "q.jsonl", "--output", "o.jsonl"])
    error = capsys.readouterr().err
    assert "--rewriter is required" in error and "--backend" not in error


def test_rewrite_with_the_old_flag_writes_what_the_new_one_writes(tmp_path, capsys):
    common = ["--input", str(SAMPLE / "queries.jsonl"), "--quiet"]
    assert main(["rewrite", "--rewriter", f"file:{REWRITES}", *common, "--output", str(tmp_path / "new.jsonl")]) == 0
    assert main(["rewrite", "--backend", f"file:{REWRITES}", *common, "--output", str(tmp_path / "old.jsonl")]) == 0
    assert "use --rewriter" in capsys.readouterr().err
    assert (tmp_path / "old.jsonl").read_text() == (tmp_path / "new.jsonl").read_text() != ""


def test_eval_with_the_old_flag_searches_the_retriever_it_names(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TSQR_ES_URL", raising=False)
    common = ["eval", "--dataset", "sample", "--rewriter", "none", "--quiet"]
    assert main([*common, "--backend", "embedded", "--output", str(tmp_path / "embedded")]) == 0
    assert list(json.loads((tmp_path / "embedded" / "results.json").read_text())["results"]) == ["embedded"]
    # not the default retriever: this one needs a URL, and says so in the new words
    assert main([*common, "--backend", "elasticsearch", "--output", str(tmp_path / "es")]) == 2
    error = capsys.readouterr().err
    assert "--backend is deprecated, use --retriever" in error
    assert "the elasticsearch retriever needs a URL: --retriever elasticsearch:http://" in error


def test_proxy_errors_name_the_new_flag_whichever_was_typed(capsys):
    pytest.importorskip("uvicorn", reason="tsqr proxy needs the 'serve' extra")
    assert main(["proxy", "--upstream", "localhost:9200", "--backend", f"file:{REWRITES}", "--no-cache"]) == 2
    assert "--search-node must be an http(s) URL" in capsys.readouterr().err


def test_serve_flags_and_the_config_file_old_engine_key_map_to_rewriter(tmp_path, caplog):
    old = tmp_path / "old.yaml"
    old.write_text(f"engine: file\nrewrites: {REWRITES}\nmax-batch-size: 8\n")
    with caplog.at_level(logging.WARNING, logger="tsqr_plugins.settings"):
        config = ServiceConfig.load(old)
    assert config.rewriter == "file" and config.max_batch_size == 8
    assert "'engine' is deprecated, use 'rewriter'" in caplog.text and str(old) in caplog.text
    # a flag (either spelling: both land on rewriter) overrides the file, as for every setting
    args = build_parser().parse_args(["serve", "--config", str(old), "--engine", "openai", "--upstream", "http://a:1/v1"])
    settings = {key: value for key, value in vars(args).items() if key not in ("config", "run", "command", "verbose")}
    assert ServiceConfig.load(args.config, **settings).rewriter == "openai"
    both = tmp_path / "both.yaml"
    both.write_text(f"engine: file\nrewriter: file\nrewrites: {REWRITES}\n")
    with pytest.raises(InputError, match="'engine' is the old name of 'rewriter'"):
        ServiceConfig.load(both)


def test_service_config_engine_keyword_warns_and_maps_to_rewriter():
    with pytest.warns(DeprecationWarning, match=r"ServiceConfig\(engine=...\) is deprecated, use rewriter="):
        config = ServiceConfig(engine="file", rewrites=REWRITES)
    assert config.rewriter == "file"
    assert ServiceConfig(rewrites=REWRITES).rewriter == "file"  # the default
    with pytest.warns(DeprecationWarning), pytest.raises(InputError, match="disagree"):
        ServiceConfig(rewriter="openai", engine="file", rewrites=REWRITES, upstream=["http://a:1/v1"])


def test_create_app_engine_keyword_health_and_metrics_keep_the_old_names_for_one_release():
    pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra")
    import httpx

    from tsqr_plugins.backends import load_backend
    from tsqr_plugins.service import create_app
    from tsqr_plugins.testing.service import RunningApp

    config = ServiceConfig(rewriter="file", rewrites=REWRITES, no_cache=True)
    with pytest.warns(DeprecationWarning, match=r"create_app\(engine=...\) is deprecated, use backend="):
        app = create_app(config, engine=load_backend(f"file:{REWRITES}", on_missing="fallback"))
    with RunningApp(app) as running:
        health = httpx.get(running.url + "/health", timeout=30).json()
        metrics = httpx.get(running.url + "/metrics", timeout=30).text
    assert health["rewriter"] == health["engine"] == "file"
    assert "tsqr_rewriter_errors_total 0" in metrics and "tsqr_engine_errors_total 0" in metrics
    assert "# HELP tsqr_engine_errors_total Deprecated: tsqr_rewriter_errors_total" in metrics
