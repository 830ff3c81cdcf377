"""The fields ``tsqr proxy`` adds to an answer to say what was done (``X-Tsqr-Rewritten``,
``X-Tsqr-Fallback``, ``X-Tsqr-Samples``...), as the client stages' ``tsqr`` metadata says it."""

from __future__ import annotations

from . import stagesamples


def fallback_headers(samples: int, fallbacks: int = 1) -> dict[str, str]:
    """The fields of an answer when rewriting failed as a whole (an error, a missed budget): every
    text query fell back, and with several samples every sample (``X-Tsqr-Samples`` still says N)."""
    return {"X-Tsqr-Rewritten": "0", "X-Tsqr-Fallback": str(fallbacks), **every_sample_fell_back(samples)}


def every_sample_fell_back(count: int) -> dict[str, str]:
    """``X-Tsqr-Samples`` and ``X-Tsqr-Samples-Fallback`` naming every one of ``count`` samples
    (none with one sample)."""
    if count == 1:
        return {}
    return {"X-Tsqr-Samples": str(count), "X-Tsqr-Samples-Fallback": ",".join(map(str, range(count)))}


def not_used(headers: dict[str, str]) -> dict[str, str]:
    """The fields of an answer to the original search sent instead of a rewritten one: every
    rewrite counted as a fallback (with several samples, every sample)."""
    fallbacks = sum(int(headers.get(f"X-Tsqr-{kind}", "0")) for kind in ("Rewritten", "Fallback"))
    samples = int(headers["X-Tsqr-Samples"]) if headers.get("X-Tsqr-Samples", "").isdigit() else 1
    return {"X-Tsqr-Rewritten": "0", "X-Tsqr-Fallback": str(fallbacks), **every_sample_fell_back(samples),
            **{k: v for k, v in headers.items() if k == "X-Tsqr-Not-Rewritten"}}


def samples_headers(rows: list, count: int) -> dict[str, str]:
    """``X-Tsqr-Samples`` (rewrites per text query) and ``X-Tsqr-Samples-Fallback`` (the samples,
    from 0, that fell back for every text query), with several samples."""
    if count == 1:
        return {}
    fallback = stagesamples.summary(rows, count)["fallback"]
    return {"X-Tsqr-Samples": str(count), **({"X-Tsqr-Samples-Fallback": ",".join(map(str, fallback))}
                                               if fallback else {})}


def not_rewritten_header(skipped: list[dict]) -> dict[str, str]:
    """``X-Tsqr-Not-Rewritten``: the text queries left as written (their kinds; the client stages'
    metadata gives the reasons)."""
    kinds = list(dict.fromkeys(entry.get("query") or entry.get("retriever", "") for entry in skipped))
    return {"X-Tsqr-Not-Rewritten": ", ".join(kinds)} if kinds else {}
