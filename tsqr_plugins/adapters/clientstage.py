"""What the sync and async client stages share (``searchclient.py``): the settings and the
rewriter, how a ``search()``/``msearch()`` call becomes a job, the fail-open metadata, the samples'
metadata, and the fused answers built from the engine's (everything but the I/O, which differs
between a sync and an async client).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..core import Rewrite, Rewriter, as_backend_error, join_samples
from ..errors import BackendError, BackendTimeout, InputError
from ..fusion import RRF_K
from .. import querydsl
from . import fusedsearch, stage, stagesamples
from .fusedsearch import Split
from .stage import Plan, StageSettings, StatsKey
from .stagecall import Job, parts_of, search_parts, single_index

logger = logging.getLogger(__name__)

NOTHING_REWRITTEN = fusedsearch.NOTHING_REWRITTEN


def shard_failures(response: Any) -> str | None:
    """The shard failures of a search answer, as text (None when every shard answered)."""
    body = response if isinstance(response, dict) else getattr(response, "body", None)
    failures = body.get("_shards", {}).get("failures") if isinstance(body, dict) else None
    return str(failures) if failures else None


def note(response: Any, extra: dict) -> Any:
    """Add ``extra`` to the stage's metadata of a response (each item's, for ``msearch``)."""
    body = fusedsearch.body_of(response)
    info = body.get("tsqr") if isinstance(body, dict) else None
    for entry in info if isinstance(info, list) else [info]:
        if isinstance(entry, dict):
            entry.update(extra)
    return response


def annotate(response: Any, info: Any) -> Any:
    """Add the stage's metadata to a search response under ``"tsqr"``."""
    body = response if isinstance(response, dict) else getattr(response, "body", None)
    if isinstance(body, dict):
        body["tsqr"] = info
    return response


class ClientStage:
    """What the sync and async clients share: settings, the rewriter, the latest rewrites."""

    # elasticsearch-py 8+ takes request fields as keywords and deprecates mixing ``body`` with
    # parameters such as ``routing``; opensearch-py takes ``body``.
    BODY_AS_KEYWORDS = False

    def __init__(self, client: Any, rewriter: Rewriter | None, *, fields=None, scoring: str = "match",
                 mode: str = "replace", repeat: int = 5, clause_budget: int = querydsl.DEFAULT_CLAUSE_BUDGET,
                 original_boost: float = 1.0, rewrite_boost: float = 1.0, annotate_response: bool = True,
                 include_filters: bool = False, fusion: str | None = None, rrf_k: float = RRF_K,
                 original_weight: float = 1.0, rewrite_weight: float = 1.0, budget: float | None = None,
                 samples: int = 1):
        """The keyword options are :class:`~tsqr_plugins.adapters.stage.StageSettings`' fields, plus
        ``annotate_response``.

        Args:
            client: The Elasticsearch or OpenSearch client to wrap; its other methods stay reachable.
            rewriter: Makes the rewrites; None sends every search as written.
            fields: Rewrite only text queries on these fields; None: every text query.
            scoring: ``"match"`` (plain BM25 on the rewrite) or ``"bm25q"`` (query-side BM25).
            mode: ``"replace"``, ``"concat"`` or ``"both"``.
            repeat: ``concat`` only: how many times the original goes before the rewrite.
            clause_budget: Most clauses the rewrites of one search may add.
            original_boost: ``both`` only: boost of the original query's clause.
            rewrite_boost: ``both`` only: boost of the rewrite's clause.
            annotate_response: Add what was done (rewrites, fallbacks, dropped terms) to the
                response under ``"tsqr"``.
            include_filters: Also rewrite text queries under ``bool.filter``/``must_not``,
                ``boosting.negative`` and ``constant_score``.
            fusion: ``"rrf"``: ``search()`` answers the reciprocal rank fusion of the original
                search and the rewritten one, sent as one ``_msearch`` (see ``fusedsearch.py`` for
                what the answer holds and which searches are not fused); None: the rewritten search.
            rrf_k: ``rrf``: the rank constant (default 60).
            original_weight: ``rrf``: the weight of the original query's ranking.
            rewrite_weight: ``rrf``: the weight of the rewrite's ranking.
            budget: Anytime rewriting (needs ``fusion="rrf"``): seconds the rewrite may take. The
                original goes out at once; a rewrite within the budget is searched and fused,
                a later one is not waited for (the original's answer, ``anytime.rewrite_in_time``
                false). None: no budget. With several samples it waits for all of them (one engine
                call), and ``tsqr.anytime.samples`` says how many.
            samples: Rewrites of each text query, sampled in one engine call where the engine can
                (``Rewriter.rewrite_samples``, each cached under its sample index). Without fusion
                the samples joined are the rewrite (``core.join_samples``); with ``fusion="rrf"``
                each sample that did not fall back is its own ``_msearch`` item, fused with the
                original's (weights ``[original_weight] + [rewrite_weight] * n``). The metadata says
                the samples (``tsqr.samples``, each text query's ``samples``); ``last_samples``
                holds them. Default 1.

        Raises:
            InputError: ``rewriter`` is not a Rewriter, or a setting is invalid.
        """
        if rewriter is not None and not isinstance(rewriter, Rewriter):
            raise InputError(f"rewriter must be a tsqr_plugins.Rewriter, got {type(rewriter).__name__}")
        self.client = client
        self.rewriter = rewriter
        self.settings = StageSettings(
            fields=fields, scoring=scoring, mode=mode, repeat=repeat, clause_budget=clause_budget,
            original_boost=original_boost, rewrite_boost=rewrite_boost, include_filters=include_filters,
            fusion=fusion, rrf_k=rrf_k, original_weight=original_weight, rewrite_weight=rewrite_weight,
            budget=budget, samples=samples)
        self.annotate_response = annotate_response
        self.last_rewrites: list[Rewrite] = []  # several samples: each text query's joined
        self.last_samples: list[list[Rewrite]] = []  # each text query's samples

    def __getattr__(self, name):
        # Every other client method (index, bulk, indices, close, ...) is the wrapped client's.
        return getattr(self.__dict__["client"], name)

    def _plan(self, parts: dict | None) -> Plan | None:
        if parts is None:
            return None
        plan = stage.plan(parts, self.settings)
        return plan if plan.leaves or plan.skipped else None  # what was left as written is said too

    def _search_job(self, kwargs: dict) -> Job | None:
        parts, rebuild = parts_of(kwargs)
        plan = self._plan(parts) if self.rewriter is not None else None
        if plan is None:
            return None
        return Job([plan], [single_index(kwargs.get("index"))], lambda queries: rebuild(queries[0]), single=True)

    def _msearch_job(self, kwargs: dict) -> Job | None:
        """``msearch(searches=[header, body, ...])`` (or ``body=`` as such a list); NDJSON strings pass."""
        key = "searches" if isinstance(kwargs.get("searches"), list) else "body"
        items = kwargs.get(key)
        if self.rewriter is None or not isinstance(items, list) or len(items) % 2:
            return None
        headers, bodies = items[0::2], items[1::2]
        plans = [self._plan(search_parts(body)) for body in bodies]
        if not any(plans):
            return None
        default = kwargs.get("index")
        indexes = [single_index(h.get("index", default) if isinstance(h, dict) else default) for h in headers]

        def rebuild(queries: list[dict | None]) -> dict:
            new_items = []
            for header, body, parts in zip(headers, bodies, queries):
                new_items += [header, body if parts is None else {**body, **parts}]
            return {**kwargs, key: new_items}

        return Job(plans, indexes, rebuild, single=False)

    def _failed(self, error: Exception, single: bool, size: int) -> Any:
        """Fail-open for anything our stage breaks on: the caller's searches go out untouched."""
        if isinstance(error, InputError):
            raise error
        if self.rewriter is not None and self.rewriter.strict:
            raise as_backend_error(error)
        logger.warning("query rewriting failed; searching with the original query (%s: %s)",
                       type(error).__name__, error)
        info = self._all_fell_back({"rewritten": 0, "fallback": 1, "error": f"{type(error).__name__}: {error}"})
        return info if single else [dict(info) for _ in range(size)]  # each item's own: notes go to one

    def _all_fell_back(self, info: dict) -> dict:
        """``info`` of a search left as written, saying that every sample fell back (several samples)."""
        return stagesamples.all_fell_back(info, self.settings.samples)

    def _termvectors_request(self, index: str | None, key: StatsKey) -> dict | None:
        if index is None:
            return None
        text, fields = key
        body = querydsl.termvectors_body(text, list(fields))
        request = {**body} if self.BODY_AS_KEYWORDS else {"body": body}
        return {"index": index, **request, "routing": querydsl.TERMVECTORS_ROUTING}

    @staticmethod
    def _termvectors_failed(index: str, error: Exception) -> None:
        logger.warning("_termvectors on %s failed, BM25Q falls back to match (%s)", index, error)

    def _clause_limit_fallback(self, error: Any, rewritten: bool) -> dict | None:
        """The fallback info when the engine refused a rewritten search for its clause count, whole
        (an error) or on some shards (their failures in an answer): a field pattern matched more
        fields than the budget counted. The original search then goes out."""
        if error is None or not rewritten or (self.rewriter is not None and self.rewriter.strict):
            return None
        if not querydsl.passed_clause_limit(f"{error} {getattr(error, 'info', '')} {getattr(error, 'body', '')}"):
            return None
        logger.warning("the rewritten search passed the engine's clause limit; searching with the original query")
        return self._all_fell_back({"rewritten": 0, "fallback": 1, "error": "the rewritten query passed the engine's "
                                    "clause limit (maxClauseCount): a field pattern matched more fields than the "
                                    "clause budget counted"})

    def _respond(self, response: Any, info: Any) -> Any:
        if isinstance(info, list):  # msearch: an item the engine refused says so in its own metadata
            body = response if isinstance(response, dict) else getattr(response, "body", None)
            items = body.get("responses") if isinstance(body, dict) else None
            for item, item_info in zip(items if isinstance(items, list) else [], info):
                if isinstance(item, dict) and "error" in item and item_info.get("rewritten") \
                        and item_info.get("fusion", {}).get("answer") != "original":
                    reason = "the clause limit" if querydsl.passed_clause_limit(str(item["error"])) else "an error"
                    item_info["error"] = (f"the engine refused this rewritten search ({reason}); msearch items "
                                          "are not searched again with the original query")
        return annotate(response, info) if info is not None and self.annotate_response else response

    # -- several samples (samples=n) -------------------------------------------------------------

    def _keep(self, rows: list[list[Rewrite]]) -> None:
        """The latest call's samples in ``last_samples``, each text query's joined in ``last_rewrites``
        (set in the caller's thread: a late rewrite's worker never writes them)."""
        self.last_samples = rows
        self.last_rewrites = [join_samples(row) for row in rows]

    @staticmethod
    def _slot_infos(job: Job, slots: list, infos: list[dict], samples: list | None,
                    rows: list[list[Rewrite]]) -> list[dict]:
        """An ``msearch()``'s metadata per search: a search fused from several samples' searches has
        theirs merged (``stagesamples.merged``; ``rows``: this call's samples, never ``last_samples``,
        which a concurrent call on the stage may have replaced), any other the joined rewrite's."""
        if samples is None:
            return infos
        rows = job.per_search(rows)
        return [stagesamples.merged([own[number] for _, own in samples], rows[number]) if slot.target is not None
                else info for number, (slot, info) in enumerate(zip(slots, infos))]

    def _described(self, job: Job, info: Any, rows: list[list[Rewrite]]) -> Any:
        """The metadata of the joined rewrites with each text query's samples (several samples)."""
        count = self.settings.samples
        if job.single:
            return stagesamples.described(info, rows, count)
        return [stagesamples.described(one, own, count) for one, own in zip(info, job.per_search(rows))]

    def _sample_jobs(self, make_job, kwargs: dict, rows: list[list[Rewrite]]) -> list[Job]:
        """Each sample's own job (fusion with several samples): fresh plans of the call, every text
        query given that sample's rewrite."""
        jobs = []
        for sample in range(self.settings.samples):
            job = make_job(kwargs)
            job.assign(stagesamples.column(rows, sample))
            jobs.append(job)
        return jobs

    # -- fusion (fusion="rrf") and anytime rewriting (budget) -----------------------------------

    def _fusion_plan(self, kwargs: dict) -> tuple[Job | None, Split | None, str | None]:
        """The job and the ``_msearch`` item of a search to fuse, or why it is not fused."""
        try:
            job = self._search_job(kwargs)
        except Exception:  # the plain path meets the same error and handles it (fail-open or raise)
            return None, None, "the stage could not read the search"
        if job is None or not job.texts:
            return job, None, "no text query to rewrite"
        target, reason = fusedsearch.split(kwargs)
        return job, target, reason

    def _fused_msearch_job(self, kwargs: dict) -> Job | None:
        """The job of an ``msearch()`` to fuse; None: nothing to rewrite, or a call the stage
        cannot read (the plain path then handles it: fail-open, or the error)."""
        try:
            job = self._msearch_job(kwargs)
        except Exception:
            return None
        return job if job is not None and job.texts else None

    @staticmethod
    def _unfused(info: dict, reason: str, answer: str | None = None) -> dict:
        return {**info, "fused": False, "fusion": {"reason": reason, **({"answer": answer} if answer else {})}}

    def _late_or_raise(self, job: Job, error: Exception) -> dict:
        """The metadata of a rewrite that missed the budget (the original's answer, said so); a
        strict rewriter raises BackendTimeout instead."""
        if self.rewriter.strict:
            raise BackendTimeout(f"no rewrite within the budget of {self.settings.budget:g} s") from error
        reason = f"no rewrite within the budget of {self.settings.budget:g} s"
        entries = [{"original": text, "fallback": True, "reason": reason} for text in job.texts]
        return self._all_fell_back({"rewritten": 0, "fallback": len(entries), "queries": entries})

    def _fused_answer(self, target: Split, original: Any, rewritten: Any, info: dict,
                      took: Any, samples: list[int] | None = None) -> tuple[dict | None, dict]:
        """The answer to a fused search from the original's answer and the rewrites' (one, or a
        list: ``samples`` says which sample each is), and its metadata; None: the original search
        itself failed (the caller gets the engine's own answer to it, sent alone)."""
        result = fusedsearch.outcome(original, rewritten, target, self.settings, took, samples)
        if result.fusion is not None:
            return result.answer, {**info, "fused": True, "fusion": result.fusion}
        base = (self._clause_limit_fallback(str(rewritten), True) if result.rewrite_refused else None) or info
        return result.answer, self._unfused(base, result.reason, "original")

    def _fused_items(self, response: Any, slots: list, infos: list[dict]) -> Any:
        """A fused ``_msearch``'s answer as the caller's: one item per search, the fused ones built
        from their two items (the original's own item when it failed)."""
        body = fusedsearch.body_of(response)
        responses = body.get("responses") if isinstance(body, dict) else None
        if not isinstance(responses, list) or len(responses) != slots[-1].item + slots[-1].items:
            raise BackendError(f"the engine answered the _msearch with {str(body)[:200]}, not one answer per item")
        answers, item_infos = [], []
        for slot, info in zip(slots, infos):
            first = responses[slot.item]
            if slot.target is None:
                answers.append(first)
                item_infos.append(self._unfused(info, slot.reason))
                continue
            rest = responses[slot.item + 1:slot.item + slot.items]
            tooks = [item.get("took") if isinstance(item, dict) else None for item in (first, *rest)]
            took = sum(tooks) if all(isinstance(t, int) for t in tooks) else None
            answer, item_info = self._fused_answer(slot.target, first, rest, info, took, slot.samples)
            answers.append(first if answer is None else answer)
            item_infos.append(item_info)
        return self._respond(fusedsearch.like(response, {**body, "responses": answers}), item_infos)

    def _anytime_answer(self, target: Split, original: Any, rewritten: list | None, info: dict,
                        anytime: dict, samples: list[int]) -> Any:
        """Anytime's answer: the fusion when the rewrites were searched (``rewritten``: each one's
        answer or the error the client raised, ``samples`` which sample each is), else the
        original's page."""
        body = fusedsearch.body_of(original)
        if rewritten is None:
            reason = ("the rewrite missed the budget" if not anytime["rewrite_in_time"]
                      else "nothing was rewritten (the rewrite fell back)")
            answer, info = fusedsearch.page(body, target), self._unfused(info, reason, "original")
        else:
            seconds = [fusedsearch.body_of(one) if not isinstance(one, BaseException) else {
                "error": f"{one} {getattr(one, 'info', '')} {getattr(one, 'body', '')}"} for one in rewritten]
            tooks = [item.get("took") for item in (body, *seconds) if isinstance(item, dict)]
            took = (sum(tooks) if len(tooks) == 1 + len(seconds) and all(isinstance(t, int) for t in tooks)
                    else body.get("took"))
            answer, info = self._fused_answer(target, body, seconds, info, took, samples)
            answer = fusedsearch.page(body, target) if answer is None else answer  # the client raised on errors
        return self._respond(fusedsearch.like(original, answer), {**info, "anytime": anytime})

    def _in_time(self, started: float) -> bool:
        return time.monotonic() < started + self.settings.budget

    def _anytime_info(self, started: float, in_time: bool) -> dict:
        """``tsqr.anytime``; with several samples, ``samples``: how many the budget waited for (all
        of them, from one engine call: ``rewrite_in_time`` is theirs)."""
        info = {"budget": self.settings.budget, "rewrite_in_time": in_time,
                "waited": round(time.monotonic() - started, 3)}
        if self.settings.samples > 1:
            info["samples"] = self.settings.samples
        return info
