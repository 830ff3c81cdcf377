"""The embedded BM25Q engine against BRIGHT's gensim recipe, same corpus and queries, one process.

Corpus: every published TongSearch-QR query and rewrite (../shared/data/tongsearch-qr) cut into
passages of 60 words (~20k documents) and of 20 words (~60k, the size of BRIGHT biology's 57k):
prose, code and math. The gensim recipe sorts every document per query, so its cost grows with the
corpus faster than ours; both sizes are reported. Queries: 100 published 7B
rewrites of ~350 words. Both engines get the same tokens (analysis is timed separately, against
pyserini's Java analyzer when pyserini is installed). With pyserini installed, its Lucene BM25Q search
(1.x: Anserini's QuerySideBm25QueryGenerator and the threaded batch path; 0.25: tsqr's boosted
query) is measured beside the embedded engine on the same corpus and queries. Prints times, ratios
and peak traced memory (the Python heap only: the JVM's is not traced).

    python benchmarks/bm25_embedded.py [--shared ../shared] [--passage-words 60 20]

Targets (issue 6): index build >= 5x faster, 100 queries >= 20x faster, memory no higher.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from pathlib import Path


class Pretokenized:
    """An analyzer that returns tokens computed beforehand, so both engines index the same terms."""

    name = "pretokenized"

    def __init__(self, tokens: dict[str, list[str]]):
        self.tokens = tokens

    def __call__(self, text):
        return self.tokens[text]

    def settings(self):
        return {"analyzer": self.name}


def measure(label, function):
    """Best wall time of three runs, then peak traced memory of a fourth (tracing slows Python code)."""
    seconds = float("inf")
    for _ in range(3):
        gc.collect()
        start = time.perf_counter()
        result = function()
        seconds = min(seconds, time.perf_counter() - start)
        del result
    gc.collect()
    tracemalloc.start()
    result = function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  {label:<34} {seconds:8.3f} s   peak {peak / 2**20:8.1f} MiB")
    return result, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--passage-words", type=int, nargs="+", default=[60, 20])
    args = parser.parse_args()
    for words in args.passage_words:
        compare(args.shared, words)


def compare(shared: Path, passage_words: int) -> None:

    from tsqr_plugins.analyzer import LuceneEnglishAnalyzer
    from tsqr_plugins.search.bm25 import BM25Index

    data = shared / "data" / "tongsearch-qr"
    texts = []
    for path in sorted(data.glob("*_reasoned_BRIGHT_queries.json")):
        published = json.loads(path.read_text(encoding="utf-8"))
        texts += list(published) + list(published.values())
    words = " ".join(texts).split()
    n = passage_words
    documents = list(dict.fromkeys(" ".join(words[i:i + n]) for i in range(0, len(words), n)))
    doc_ids = [f"p{i}" for i in range(len(documents))]
    rewrites = json.loads((data / "TongSearch-QR-7B_reasoned_BRIGHT_queries.json").read_text(encoding="utf-8"))
    queries = sorted(rewrites.values(), key=lambda t: abs(len(t.split()) - 350))[:100]
    print(f"corpus: {len(documents)} passages of {n} words; {len(queries)} queries, "
          f"mean {sum(len(q.split()) for q in queries) / len(queries):.0f} words")

    print("analysis (Lucene English, Porter):")
    all_texts = documents + queries
    # A fresh analyzer per run: its memo of stems must not make the second run look faster.
    tokens, ours_analysis, _ = measure("tsqr analyzer (Python)",
                                       lambda: [a(t) for a in [LuceneEnglishAnalyzer()] for t in all_texts])
    try:
        from tsqr_plugins.java import ensure_java_home

        ensure_java_home()
        from pyserini.analysis import Analyzer, get_lucene_analyzer

        reference_analyzer = Analyzer(get_lucene_analyzer())
        reference_tokens, ref_analysis, _ = measure(
            "pyserini analyzer (Java)", lambda: [reference_analyzer.analyze(t) for t in all_texts])
        print(f"  tokens identical: {reference_tokens == tokens}; "
              f"speed ratio pyserini/tsqr = {ref_analysis / ours_analysis:.2f}")
    except Exception as error:  # pyserini or Java absent: the engine comparison still runs
        print(f"  (pyserini analyzer not measured: {error})")
    analyzer = Pretokenized(dict(zip(all_texts, tokens)))

    print("index build (same tokens):")
    from gensim.corpora import Dictionary
    from gensim.models import LuceneBM25Model
    from gensim.similarities import SparseMatrixSimilarity

    corpus_tokens = tokens[:len(documents)]

    def gensim_build():
        dictionary = Dictionary(corpus_tokens)
        model = LuceneBM25Model(dictionary=dictionary, k1=0.9, b=0.4)
        index = SparseMatrixSimilarity(model[list(map(dictionary.doc2bow, corpus_tokens))],
                                       num_docs=len(corpus_tokens), num_terms=len(dictionary),
                                       normalize_queries=False, normalize_documents=False)
        return dictionary, model, index

    (dictionary, model, gensim_index), gensim_build_s, gensim_build_mem = measure("gensim recipe", gensim_build)
    ours, ours_build_s, ours_build_mem = measure(
        "tsqr embedded", lambda: BM25Index.build(doc_ids, documents, analyzer=analyzer))

    print(f"{len(queries)} queries, top 1000 (BRIGHT's depth):")

    def gensim_search():
        results = []
        for query in queries:
            scores = gensim_index[model[dictionary.doc2bow(analyzer(query))]].tolist()
            ranked = sorted(zip(doc_ids, scores), key=lambda x: x[1], reverse=True)[:1000]
            results.append(ranked)
        return results

    reference, gensim_query_s, gensim_query_mem = measure("gensim recipe", gensim_search)
    hits, ours_query_s, ours_query_mem = measure("tsqr embedded", lambda: ours.search_batch(queries, k=1000))
    same = all([d for d, _ in r[:10]] == [h.doc_id for h in h_[:10]] for r, h_ in zip(reference, hits))
    print(f"  identical top-10 lists: {same}")
    try:
        lucene_query_s = pyserini_search(documents, doc_ids, queries, hits)
        print(f"  speed ratio pyserini/tsqr = {lucene_query_s / ours_query_s:.2f}")
    except Exception as error:  # pyserini or Java absent: said, not dropped silently
        print(f"  (pyserini search not measured: {type(error).__name__}: {error})")
    print("ratios (gensim / tsqr; > 1 means tsqr is faster or smaller):")
    print(f"  index build time   {gensim_build_s / ours_build_s:6.1f}x   (target >= 5)")
    print(f"  query time         {gensim_query_s / ours_query_s:6.1f}x   (target >= 20)")
    print(f"  build peak memory  {gensim_build_mem / ours_build_mem:6.2f}x   (target >= 1)")
    print(f"  query peak memory  {gensim_query_mem / ours_query_mem:6.2f}x")


def pyserini_search(documents, doc_ids, queries, ours) -> float:
    """Index with pyserini (timed once, JVM start included), then its BM25Q batch search of the same
    queries, top 1000, measured like the others; prints how many top-10 lists equal ours."""
    import importlib.metadata
    import subprocess
    import sys
    import tempfile

    from tsqr_plugins.java import ensure_java_home

    ensure_java_home()
    version = importlib.metadata.version("pyserini")
    folder = Path(tempfile.mkdtemp(prefix="tsqr-bench-lucene-"))
    (folder / "docs").mkdir()
    with open(folder / "docs" / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for doc_id, text in zip(doc_ids, documents):
            handle.write(json.dumps({"id": doc_id, "contents": text}) + "\n")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tsqr_plugins.search.pyserini_index", "--collection", "JsonCollection",
                    "--input", str(folder / "docs"), "--index", str(folder / "index"), "--generator",
                    "DefaultLuceneDocumentGenerator", "--threads", "2"], check=True, capture_output=True)
    print(f"  pyserini {version} index build (2 threads, JVM start included, once): "
          f"{time.perf_counter() - start:.3f} s")
    from tsqr_plugins.search.pyserini_searcher import BM25QSearcher

    searcher = BM25QSearcher(str(folder / "index"), scoring="bm25q", k1=0.9, b=0.4)
    qids = [str(i) for i in range(len(queries))]
    results, seconds, _ = measure(f"pyserini {version} BM25Q ({'native' if searcher.native else 'boosted'})",
                                  lambda: searcher.batch_search(queries, qids, k=1000, threads=2))
    same = sum([h.docid for h in results[q][:10]] == [h.doc_id for h in o[:10]] for q, o in zip(qids, ours))
    print(f"  top-10 lists equal to the embedded engine's: {same} of {len(queries)} (Lucene's one-byte "
          "document lengths can swap near-ties; 1.x counts unseen query tokens in |q|)")
    return seconds


if __name__ == "__main__":
    main()
