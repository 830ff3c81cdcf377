"""Property-based tests (hypothesis): the query-file parser and the service's request bodies.

Whatever the input, the answer is a result or a clear error (InputError, a 4xx naming the
problem), never a crash deep in a library, and what tsqr writes it reads back unchanged."""

from __future__ import annotations

import json

import httpx
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="property tests need the 'dev' extra (hypothesis)")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tsqr_plugins.errors import InputError  # noqa: E402
from tsqr_plugins.queryfile import read_queries, write_jsonl  # noqa: E402

# derandomize: the same examples on every run, so that make test cannot fail by the luck of the draw
# (run with --hypothesis-seed=random, or drop it locally, to explore further)
FAST = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
texts = st.text(min_size=1).filter(lambda t: t.strip())  # any Unicode, line and paragraph separators too
ids = st.text(min_size=1, max_size=20)


@FAST
@given(st.lists(st.tuples(ids, texts), min_size=1, max_size=8, unique_by=lambda pair: pair[0]))
def test_what_tsqr_writes_it_reads_back(tmp_path, rows):
    path = tmp_path / "queries.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        write_jsonl(handle, ({"query_id": query_id, "text": text} for query_id, text in rows))
    assert [(q.query_id, q.text) for q in read_queries(path)] == rows


safe_field = st.text(alphabet=st.characters(blacklist_characters="\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
                                            blacklist_categories=("Cs",)), min_size=1)


# (no id starts with U+FEFF: the file's first character would be a byte order mark, which is dropped)
@FAST
@given(st.lists(st.tuples(safe_field.filter(lambda t: t.strip() == t and t and not t.startswith("\ufeff")),
                          safe_field.filter(str.strip)),
                min_size=1, max_size=8, unique_by=lambda pair: pair[0]))
def test_tsv_round_trips(tmp_path, rows):
    path = tmp_path / "queries.tsv"
    path.write_text("".join(f"{query_id}\t{text}\n" for query_id, text in rows), encoding="utf-8")
    assert [(q.query_id, q.text) for q in read_queries(path)] == rows


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)


@FAST
@given(st.lists(st.text() | json_values.map(json.dumps), min_size=1, max_size=6), st.sampled_from([".jsonl", ".tsv", ".txt", ""]))
def test_any_query_file_gives_queries_or_an_input_error(tmp_path, lines, suffix):
    path = tmp_path / f"queries{suffix}"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        queries = read_queries(path)
    except InputError as error:
        assert str(path) in str(error)
        return
    for query in queries:  # (a lone surrogate may remain: `tsqr rewrite` keeps the original and writes it escaped)
        assert query.text.strip()


@pytest.mark.parametrize("line", ['{"text": "x", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}", "[" * 100_000])
def test_hostile_json_lines_are_input_errors(tmp_path, line):
    path = tmp_path / "queries.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=":2: "):
        read_queries(path)


# ---- the service's request bodies

@pytest.fixture(scope="module")
def service():
    pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra")
    from tests.test_service import file_config
    from tsqr_plugins.testing.service import RunningService

    with RunningService(file_config()) as running, httpx.Client(base_url=running.url, timeout=30) as client:
        yield client


def check_answer(response):
    assert response.status_code in (200, 400, 404, 413, 422), (response.status_code, response.text[:500])
    body = response.json()
    if response.status_code == 200:
        return body
    assert isinstance(body["error"]["message"], str) and body["error"]["code"] == response.status_code
    assert "Traceback" not in body["error"]["message"]
    return None


rewrite_bodies = st.fixed_dictionaries({}, optional={
    "queries": st.lists(st.text() | json_values, max_size=4) | json_values,
    "mode": st.sampled_from(["replace", "concat", "both"]) | json_values,
    "repeat": st.integers(-3, 30) | json_values,
    "strict": st.booleans() | json_values,
    "prompt_id": st.sampled_from(["tsqr-v1", "tsqr-think-v1"]) | st.text(),
    "params": st.dictionaries(st.sampled_from(["temperature", "top_p", "top_k", "max_tokens", "seed", "stop", "x"]),
                              json_values, max_size=3) | json_values,
})


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rewrite_bodies | json_values)
@example({"queries": ["0"], "strict": True})  # found by a random run in make test: strict's documented 502
def test_any_rewrite_body_gets_an_answer_or_a_4xx(service, body):
    response = service.post("/v1/rewrite", content=json.dumps(body))
    if response.status_code == 502 and isinstance(body, dict) and body.get("strict") is True:
        # documented: strict turns a fallback (here a query the file lacks) into a 502
        assert response.json()["error"]["message"].startswith("rewrite failed (strict)")
        return
    answer = check_answer(response)
    if answer is not None:  # a 200 answers every query, in order
        assert [r["original"] for r in answer["rewrites"]] == body["queries"]


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_get_an_answer_or_a_4xx(service, raw):
    check_answer(service.post("/v1/rewrite", content=raw))
    check_answer(service.post("/v1/chat/completions", content=raw))


chat_bodies = st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]) | json_values, "content": st.text() | json_values}),
    max_size=3) | json_values}, optional={"model": st.sampled_from(["tsqr-rewrite", "rewrites.json"]) | st.text(),
                                          "max_tokens": json_values, "temperature": json_values, "stream": json_values})


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat_bodies)
def test_any_chat_body_gets_an_answer_or_a_4xx(service, body):
    response = service.post("/v1/chat/completions", content=json.dumps(body))
    if response.status_code in (502, 504):  # the file rewriter cannot answer conversations that are not ours
        assert "rewriter" in response.json()["error"]["message"]
        return
    check_answer(response)


@FAST
@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=6, unique_by=lambda pair: pair[0]))
def test_rewrite_output_is_a_file_backend_input(tmp_path, pairs):
    """`tsqr rewrite --output x.jsonl` then `--rewriter file:x.jsonl` replays every rewrite (U+2028,
    U+0085 and the like in a text split the line before)."""
    from tsqr_plugins.backends.file import load_rewrite_file

    path = tmp_path / "rewrites.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        write_jsonl(handle, ({"original": original, "text": text, "fallback": False} for original, text in pairs))
    assert load_rewrite_file(path) == dict(pairs)
