"""What ``/v1/rewrite`` reads beyond the queries and answers for each one: the search text for the
mode, the samples a request asked for (``n``), and for mode ``rrf`` the texts to search separately
with the reciprocal rank fusion to apply to their results (the service searches nothing itself)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tsqr_plugins.combine import MODES
from tsqr_plugins.core import Rewrite, fused_samples, join_samples, sample_fields
from tsqr_plugins.fusion import RRF_K

# rrf: the caller searches the original and each rewrite, then fuses the lists (as a client
# stage's fusion="rrf" and tsqr eval --combine rrf do)
REWRITE_MODES = (*MODES, "rrf")
# the fields of mode rrf, named as StageSettings names them
FUSION_FIELDS = ("rrf_k", "original_weight", "rewrite_weight")


class RequestFieldError(ValueError):
    """A field of a ``/v1/rewrite`` request has a value the service does not take (a 400)."""


@dataclass(frozen=True)
class Fusion:
    """Mode ``rrf``'s fusion: score each document ``sum_i w_i / (k + rank_i)`` over the searches
    (:func:`tsqr_plugins.fusion.rrf`).

    Attributes:
        k: The rank constant (60, as the engines).
        original_weight: The weight of the original query's search.
        rewrite_weight: The weight of each rewrite's search.
    """

    k: float = RRF_K
    original_weight: float = 1.0
    rewrite_weight: float = 1.0

    def answer(self, searches: int) -> dict[str, Any]:
        """The ``fusion`` object of a rewrite with ``searches`` texts, the original's first.

        Args:
            searches: How many texts are searched: the original and each rewrite.
        """
        return {"method": "rrf", "k": self.k,
                "weights": [self.original_weight] + [self.rewrite_weight] * (searches - 1)}


def parse_samples(body: dict[str, Any], limit: int) -> int | None:
    """The request's ``n``: how many rewrites of each query to sample; None when it asks none.

    Args:
        body: The request.
        limit: The most samples one query may ask for (``--max-samples``).

    Raises:
        RequestFieldError: ``n`` is not an integer from 1 to ``limit``, or comes with ``match``
            (one match query takes one rewrite).
    """
    if "n" not in body:
        return None
    n = body["n"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
        raise RequestFieldError(f"'n' must be an integer from 1 to {limit} (--max-samples)")
    if "match" in body:
        raise RequestFieldError("'n' takes 'queries'; a 'match' query is searched with one rewrite")
    return n


def parse_fusion(body: dict[str, Any], mode: str) -> Fusion | None:
    """Mode ``rrf``'s fusion from ``rrf_k``, ``original_weight`` and ``rewrite_weight`` (each
    optional); None for other modes.

    Args:
        body: The request.
        mode: The request's mode.

    Raises:
        RequestFieldError: A field is not a finite number >= 0, or one is given with another mode.
    """
    given = [name for name in FUSION_FIELDS if name in body]
    if mode != "rrf":
        if given:
            raise RequestFieldError(f"{given} set the fusion of mode rrf; this request's mode is {mode!r}")
        return None
    values = {}
    for name in given:
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise RequestFieldError(f"{name!r} must be a number >= 0")
        values[name] = value
    return Fusion(values.get("rrf_k", RRF_K), values.get("original_weight", 1.0), values.get("rewrite_weight", 1.0))


def answer_copies(mode: str, repeat: int, n: int | None) -> int:
    """How many copies of each query an answer may hold beyond its ``original`` and ``text``:
    ``repeat`` in mode concat, and with ``n`` each sample's text and the joined text's (a
    fallen-back sample's text is its query). What bounds an answer's size before it is generated.

    Args:
        mode: The request's mode.
        repeat: The request's ``repeat``.
        n: The request's ``n``, or None.
    """
    return (repeat if mode == "concat" else 0) + (2 * n if n else 0)


def rewrite_answer(samples: Sequence[Rewrite], mode: str, repeat: int, n: int | None = None,
                   fusion: Fusion | None = None) -> dict[str, Any]:
    """One query's entry of ``/v1/rewrite``'s ``rewrites``.

    ``text`` is what to search for in ``mode`` (the original itself on a fallback); several
    samples are joined first, as ``tsqr eval --samples`` joins them (:func:`join_samples`), and it
    is a fallback only when every sample fell back. ``both`` adds ``texts`` (the original and the
    rewrite); ``rrf`` adds ``searches`` (the original, then each sample that did not fall back) and
    ``fusion``; a request with ``n`` gets ``samples``, each with its own fallback fields.

    Args:
        samples: The query's rewrites, sample 0 first (one when the request has no ``n``).
        mode: One of ``REWRITE_MODES``.
        repeat: ``concat`` only: copies of the original before the rewrite.
        n: The request's ``n``; None: no ``samples`` in the answer.
        fusion: Mode ``rrf``'s fusion.
    """
    rewrite = join_samples(samples)
    combined = "replace" if mode == "rrf" else mode  # rrf's text is the rewrite, as both's
    answer = {"original": rewrite.original, "fallback": rewrite.fallback,
              "cached": all(sample.cached for sample in samples),
              "text": rewrite.original if rewrite.fallback else rewrite.combined_text(combined, repeat),
              "model": rewrite.model, "prompt_id": rewrite.prompt_id}
    if rewrite.fallback:
        answer["reason"] = rewrite.reason
    if mode == "both":  # both texts, for the caller to fuse; "text" stays the rewrite
        answer["texts"] = [rewrite.original, rewrite.text]
    if mode == "rrf":  # a fallen-back sample's search would be the original's again
        searches = [rewrite.original] + [sample.text for sample in fused_samples(samples)]
        answer["searches"] = searches
        answer["fusion"] = (fusion or Fusion()).answer(len(searches))
    if n is not None:
        answer["samples"] = [sample_fields(sample) for sample in samples]
    return answer
