"""The pure planners of fused searches with several samples (issue 23): ``fusedsearch`` and
``fusedmsearch`` take the original and k rewrites; k = 1 gives exactly the two-item requests and
answers of one rewrite. (The client stages on real nodes: test_stage_samples_live.py.)"""

from __future__ import annotations

import json

import pytest

from tests.test_fusion import reference_rrf
from tsqr_plugins.adapters import fusedmsearch, fusedsearch, stagesamples
from tsqr_plugins.adapters.stage import StageSettings
from tsqr_plugins.core import Rewrite
from tsqr_plugins.errors import InputError

ORIGINAL = {"query": {"match": {"text": "moths"}}, "from": 1, "size": 2, "aggs": {"a": {"terms": {"field": "x"}}}}


def rewritten_body(text: str) -> dict:
    return {**ORIGINAL, "query": {"match": {"text": {"query": text}}}}


def split(body: dict, **header):
    target, reason = fusedsearch.split({"body": body, **header})
    assert reason is None
    return target


def answer(ids: list[str], total: int | None = None, took: int = 1) -> dict:
    hits = [{"_index": "docs", "_id": doc_id, "_score": 10.0 - rank} for rank, doc_id in enumerate(ids)]
    return {"took": took, "timed_out": False, "_shards": {"total": 1, "successful": 1, "failed": 0},
            "hits": {"total": {"value": total or len(ids), "relation": "eq"}, "max_score": 10.0, "hits": hits}}


def test_one_rewrite_as_a_list_is_the_two_item_request_of_one_rewrite():
    original, second = split(ORIGINAL, index="docs"), split(rewritten_body("insects"), index="docs")
    page = {"from": 0, "size": 3}
    two = [{"index": "docs"}, {**ORIGINAL, **page}, {"index": "docs"},
           {"query": {"match": {"text": {"query": "insects"}}}, **page}]  # no aggregations on the rewrite's
    assert fusedsearch.item_bodies(original, second) == fusedsearch.item_bodies(original, [second]) == (two[1], two[3])
    for rewritten in (second, [second]):
        assert fusedsearch.msearch_call(original, rewritten, True) == {"searches": two}
        assert fusedsearch.msearch_call(original, rewritten, False) == {"body": two}
        assert fusedsearch.ndjson(original, rewritten) == "".join(json.dumps(line) + "\n" for line in two).encode()


def test_k_rewrites_are_one_item_each_after_the_originals():
    original = split(ORIGINAL, index="docs", routing="r")
    rewrites = [split(rewritten_body(text), index="docs", routing="r") for text in ("a b", "c d", "e f")]
    items = fusedsearch.msearch_call(original, rewrites, True)["searches"]
    assert len(items) == 8 and items[0::2] == [{"index": "docs", "routing": "r"}] * 4
    assert [item["query"] for item in items[3::2]] == [{"match": {"text": {"query": t}}} for t in ("a b", "c d", "e f")]
    assert all(item["from"] == 0 and item["size"] == 3 and "aggs" not in item for item in items[3::2])
    assert items[1]["aggs"] == ORIGINAL["aggs"]
    lines = fusedsearch.ndjson(original, rewrites).decode().splitlines()
    assert [json.loads(line) for line in lines] == items


def test_fuse_of_k_lists_equals_the_papers_formula_and_counts_each_list():
    settings = StageSettings(fusion="rrf", rrf_k=10, original_weight=1.5, rewrite_weight=0.5, samples=3)
    target = split({"query": {"match_all": {}}, "from": 1, "size": 3})
    lists = [["a", "b", "c", "d"], ["c", "e", "a", "f"], ["g", "c", "h", "b"]]
    fused, info = fusedsearch.fuse(answer(lists[0], 40), [answer(lists[1], 7), answer(lists[2], 9)], target,
                                   settings, took=5, samples=[0, 2])
    expected = reference_rrf(lists, 10, [1.5, 0.5, 0.5])
    order = sorted(sorted(expected, reverse=True), key=lambda doc: -expected[doc])  # ties: id descending
    assert [hit["_id"] for hit in fused["hits"]["hits"]] == order[1:4]
    assert [hit["_score"] for hit in fused["hits"]["hits"]] == pytest.approx([expected[d] for d in order[1:4]])
    assert fused["hits"]["total"] == {"value": 40, "relation": "eq"} and fused["took"] == 5
    assert info["weights"] == [1.5, 0.5, 0.5] and info["samples"] == [0, 2] and info["depth"] == 4
    page = order[1:4]
    assert info["hits"] == {"original": sum(d in lists[0] for d in page),
                            "samples": [sum(d in lists[1] for d in page), sum(d in lists[2] for d in page)],
                            "original_and_sample": sum(d in lists[0] and (d in lists[1] or d in lists[2])
                                                       for d in page)}
    assert info["total"]["samples"] == [{"value": 7, "relation": "eq"}, {"value": 9, "relation": "eq"}]


def test_one_sample_keeps_the_metadata_of_one_rewrite():
    target = split({"query": {"match_all": {}}, "size": 2})
    one, info = fusedsearch.fuse(answer(["a", "b"]), answer(["b", "c"]), target, StageSettings(fusion="rrf"), 2)
    listed, listed_info = fusedsearch.fuse(answer(["a", "b"]), [answer(["b", "c"])], target,
                                           StageSettings(fusion="rrf"), 2)
    assert (one, info) == (listed, listed_info)
    assert set(info["hits"]) == {"original", "rewrite", "both"} and "samples" not in info


def test_a_refused_samples_search_leaves_the_answer_unfused_and_names_the_sample():
    target = split({"query": {"match_all": {}}, "from": 1, "size": 1})
    settings = StageSettings(fusion="rrf", samples=2)
    result = fusedsearch.outcome(answer(["a", "b"]), [answer(["c"]), {"error": "too_many_clauses"}], target,
                                 settings, None, samples=[0, 1])
    assert result.fusion is None and result.rewrite_refused and "of sample 1" in result.reason
    assert [hit["_id"] for hit in result.answer["hits"]["hits"]] == ["b"]


def test_msearch_plan_gives_each_fused_search_one_item_per_sample_that_rewrote_it():
    """Three searches, two samples: the first rewritten by both samples (3 items), the second by
    sample 1 only (2 items), the third sorted (one item, the joined rewrite's body)."""
    headers = [{"index": "docs"}, {"index": "docs", "preference": "p"}, {"index": "docs"}]
    bodies = [{"query": {"match": {"text": "q1"}}, "size": 2}, {"query": {"match": {"text": "q2"}}},
              {"query": {"match": {"text": "q3"}}, "sort": [{"date": "desc"}]}]

    def call(texts):
        items = []
        for header, body, text in zip(headers, bodies, texts):
            items += [header, {**body, "query": {"match": {"text": {"query": text}}}}]
        return {"searches": items, "index": "docs"}

    original = {"searches": [x for pair in zip(headers, bodies) for x in pair], "index": "docs"}
    joined = call(["a1 b1", "b2", "a3 b3"])
    infos = [{"rewritten": 1, "fallback": 0, "queries": [{}]}] * 3
    samples = [(call(["a1", "q2", "a3"]), [{"rewritten": 1}, {"rewritten": 0}, {"rewritten": 1}]),
               (call(["b1", "b2", "b3"]), [{"rewritten": 1}, {"rewritten": 1}, {"rewritten": 1}])]
    sent, slots = fusedmsearch.plan(original, joined, infos, samples)
    items = sent["searches"]
    assert sent["index"] == "docs" and len(items) == 2 * (3 + 2 + 1)
    assert [s.item for s in slots] == [0, 3, 5] and [s.items for s in slots] == [3, 2, 1]
    assert [s.samples for s in slots] == [[0, 1], [1], []]
    assert [item["query"]["match"]["text"] for item in items[1:6:2]] == ["q1", {"query": "a1"}, {"query": "b1"}]
    assert items[6:10] == [headers[1], {**bodies[1], "from": 0, "size": 10}, headers[1],
                           {"query": {"match": {"text": {"query": "b2"}}}, "from": 0, "size": 10}]
    assert items[10:] == joined["searches"][4:] and "sorted" in slots[2].reason
    # one rewrite: the plan of one rewrite, whether given as samples or not
    single = [(joined, infos)]
    assert fusedmsearch.plan(original, joined, infos, single) == fusedmsearch.plan(original, joined, infos)


def test_msearch_plan_of_a_search_no_sample_rewrote_is_its_own_item():
    original = {"body": [{"index": "docs"}, {"query": {"match": {"text": "q"}}}]}
    infos = [{"rewritten": 1, "fallback": 0, "queries": [{}]}]
    samples = [(original, [{"rewritten": 0}]), (original, [{"rewritten": 0}])]
    sent, slots = fusedmsearch.plan(original, original, infos, samples)
    assert sent == original and slots[0].target is None and slots[0].reason == fusedsearch.NOTHING_REWRITTEN


def test_the_metadata_says_each_samples_text_and_fallback():
    rows = [[Rewrite("q", "a"), Rewrite("q", "q", fallback=True, reason="BackendError: x"), Rewrite("q", "b")],
            [Rewrite("r", "r", fallback=True, reason="e")] * 3]
    joined = {"rewritten": 1, "fallback": 1, "queries": [{"original": "q", "fallback": False, "rewrite": "a q b"},
                                                        {"original": "r", "fallback": True, "reason": "e"}]}
    info = stagesamples.described(joined, rows, 3)
    assert info["samples"] == {"count": 3, "fallback": [1]}  # sample 1 fell back for both
    assert [s["text"] for s in info["queries"][0]["samples"]] == ["a", "q", "b"]
    assert info["queries"][0]["samples"][1] == {"text": "q", "fallback": True, "cached": False, "reason": "BackendError: x"}
    assert stagesamples.described(joined, rows, 1) is joined
    per_sample = [{"rewritten": 1, "queries": [{"original": "q", "fallback": False, "rewrite": "a", "dropped_terms": 2},
                                               {"original": "r", "fallback": True, "reason": "e"}]},
                  {"rewritten": 0, "queries": [{"original": "q", "fallback": True}, {"original": "r", "fallback": True}]},
                  {"rewritten": 1, "queries": [{"original": "q", "fallback": False, "rewrite": "b"},
                                               {"original": "r", "fallback": True}]}]
    merged = stagesamples.merged(per_sample, rows)
    assert (merged["rewritten"], merged["fallback"]) == (1, 1) and merged["samples"] == {"count": 3, "fallback": [1]}
    assert merged["queries"][0]["samples"][0] == {"text": "a", "fallback": False, "cached": False, "dropped_terms": 2}
    assert stagesamples.searched(per_sample) == [0, 2]
    # each text query's entry: its original, and the reason of a fallback every sample shared
    assert merged["queries"][0]["original"] == "q" and "reason" not in merged["queries"][0]
    assert merged["queries"][1] == {"original": "r", "fallback": True, "reason": "e",
                                    "samples": merged["queries"][1]["samples"]}
    noted = stagesamples.merged([{**one, "not_rewritten": ["term query"]} for one in per_sample], rows)
    assert noted["not_rewritten"] == ["term query"]


def test_a_search_left_as_written_says_every_sample_fell_back():
    info = {"rewritten": 0, "fallback": 1, "error": "BackendTimeout: late"}
    assert stagesamples.all_fell_back(info, 3) == {**info, "samples": {"count": 3, "fallback": [0, 1, 2]}}
    assert stagesamples.all_fell_back(info, 2)["samples"] == {"count": 2, "fallback": [0, 1]}
    assert stagesamples.all_fell_back(info, 1) is info  # one sample: the metadata of one rewrite


def test_samples_are_checked():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InputError, match="samples"):
            StageSettings(samples=bad)
    assert StageSettings(samples=4).samples == 4
