"""The embedded BM25Q engine: equal to BRIGHT's gensim recipe, BRIGHT's ranking rules, its cache."""

from __future__ import annotations

import json

import pytest

from tests.conftest import PUBLISHED_7B, published_texts, skip_unless

np = pytest.importorskip("numpy", reason="the embedded engine needs the 'eval' extra")
pytest.importorskip("scipy", reason="the embedded engine needs the 'eval' extra")
from tsqr_plugins.errors import InputError  # noqa: E402
from tsqr_plugins.analyzer import LuceneEnglishAnalyzer  # noqa: E402
from tsqr_plugins.search.bm25 import BM25Index, load_or_build  # noqa: E402


def gensim_recipe(documents, queries, analyzer):
    """BRIGHT's retrieval_bm25, with our analyzer standing in for pyserini's (proved equal elsewhere)."""
    from gensim.corpora import Dictionary
    from gensim.models import LuceneBM25Model
    from gensim.similarities import SparseMatrixSimilarity

    corpus = [analyzer(text) for text in documents]
    dictionary = Dictionary(corpus)
    model = LuceneBM25Model(dictionary=dictionary, k1=0.9, b=0.4)
    index = SparseMatrixSimilarity(model[list(map(dictionary.doc2bow, corpus))], num_docs=len(corpus),
                                   num_terms=len(dictionary), normalize_queries=False, normalize_documents=False)
    return [index[model[dictionary.doc2bow(analyzer(query))]] for query in queries]


@pytest.mark.slow
def test_equal_to_the_gensim_recipe_on_thousands_of_documents():
    pytest.importorskip("gensim", reason="the reference recipe needs gensim (make test installs it)")
    skip_unless(PUBLISHED_7B.is_file(), f"the published rewrites are not at {PUBLISHED_7B}")
    published = json.loads(PUBLISHED_7B.read_text(encoding="utf-8"))
    documents = published_texts()[:3000]  # both published files: prose, code, math
    queries = list(published)[::7][:150]
    doc_ids = [f"d{i}" for i in range(len(documents))]
    analyzer = LuceneEnglishAnalyzer()
    reference = gensim_recipe(documents, queries, analyzer)
    index = BM25Index.build(doc_ids, documents, analyzer=analyzer)
    ours = index.score_batch(queries)
    assert len(documents) == 3000
    assert np.abs(ours - np.asarray(reference)).max() <= 1e-5
    for query, ref_scores in zip(queries, reference):
        # BRIGHT ranks with a stable sort on scores: ties stay in corpus order.
        expected = sorted(zip(doc_ids, ref_scores.tolist()), key=lambda x: x[1], reverse=True)[:10]
        hits = index.search(query, k=10)
        assert [h.doc_id for h in hits] == [d for d, _ in expected]
        assert [h.score for h in hits] == pytest.approx([s for _, s in expected], abs=1e-5)


def small_index():
    docs = {
        "a": "moths orbit lamps at night",
        "b": "lamps and lanterns",
        "c": "transverse orientation of moths to the moon",
        "d": "unrelated text about cooking pasta",
        "e": "unrelated text about cooking rice",
    }
    return BM25Index.build(list(docs), list(docs.values()))


def test_hand_computed_score():
    index = small_index()
    # "lanterns" occurs once, in b (3 tokens after analysis: lamp, lantern); N=5, df=1.
    import math

    avgdl = index.avgdl
    idf = math.log(6) - math.log(1.5)
    doc_weight = idf * (1 / (1 + 0.9 * (1 - 0.4 + 0.4 * 2 / avgdl)))
    query_weight = idf * (1 / (1 + 0.9 * (1 - 0.4 + 0.4 * 1 / avgdl)))
    (hit, *_) = index.search("lanterns", k=5)
    assert hit.doc_id == "b"
    assert hit.score == pytest.approx(doc_weight * query_weight, rel=1e-6)


def test_exclusions_ties_and_zero_score_padding():
    index = small_index()
    hits = index.search("moths", k=5, excluded={"a"})
    assert [h.doc_id for h in hits][0] == "c"
    assert "a" not in [h.doc_id for h in hits]
    # Zero-score documents follow in corpus order, as in BRIGHT's full-corpus sort.
    assert [h.doc_id for h in hits[1:]] == ["b", "d", "e"]
    assert all(h.score == 0 for h in hits[1:])
    # Identical scores keep corpus order.
    assert [h.doc_id for h in index.search("unrelated cooking", k=2)] == ["d", "e"]
    # A query of unknown words: every document at 0, corpus order.
    assert [h.doc_id for h in index.search("zzzz qqqq", k=3)] == ["a", "b", "c"]
    assert index.search("moths", k=5, excluded={"a", "b", "c", "d", "e"}) == []


def test_batch_equals_single():
    index = small_index()
    queries = ["moths lamps", "cooking", "moon orientation", "nothing here"]
    batch = index.search_batch(queries, k=5)
    assert batch == [index.search(q, k=5) for q in queries]


def test_cache_round_trip_and_invalidation(tmp_path):
    ids, texts = ["x", "y"], ["red apples", "green pears"]
    first = load_or_build(ids, texts, tmp_path)
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and (folders[0] / "meta.json").exists()
    again = load_or_build(ids, texts, tmp_path)
    assert again.search("apples", k=2) == first.search("apples", k=2)
    load_or_build(ids, ["red apples", "green pears!"], tmp_path)  # changed corpus: a new index
    assert len(list(tmp_path.iterdir())) == 2
    (folders[0] / "weights.npz").write_bytes(b"broken")  # a damaged cache is rebuilt, not fatal
    assert load_or_build(ids, texts, tmp_path).search("apples", k=1)[0].doc_id == "x"


def test_bad_corpora():
    with pytest.raises(InputError, match="empty corpus"):
        BM25Index.build([], [])
    with pytest.raises(InputError, match="2 document ids but 1 texts"):
        BM25Index.build(["a", "b"], ["only one"])
