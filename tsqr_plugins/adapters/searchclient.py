"""Client-side query-transform stage around an Elasticsearch or OpenSearch Python client.

``search()`` rewrites the text of the ``match``/``multi_match`` queries in the request (the
fields are configurable) and sends everything else untouched; ``msearch()`` does the same for
every search of the batch with one rewriter call; every other client method is passed through.
The engine-specific classes are in ``elasticsearch.py`` and ``opensearch.py``; what the sync and
async clients share (all but their I/O) is in ``clientstage.py``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..core import Rewrite, join_samples
from ..deadline import call_with_deadline
from ..errors import BackendTimeout
from . import fusedmsearch, fusedsearch, stagesamples
from .clientstage import NOTHING_REWRITTEN, ClientStage, note, shard_failures
from .fusedsearch import Split
from .stage import StatsKey
from .stagecall import Job, sampled_rows, samples_within_budget


class RewritingSearchClient(ClientStage):
    """A synchronous client (``elasticsearch.Elasticsearch`` or ``opensearchpy.OpenSearch``) with rewriting.

    Fail-open: when rewriting fails the search goes out as written (a strict rewriter raises), and
    a rewritten search the engine refuses for its clause count is sent again as written (``msearch``
    items excepted: their errors come back as the engine gave them). The
    rewrites of the latest call are in ``last_rewrites`` (their samples in ``last_samples``).
    """

    def search(self, **kwargs):
        """The client's ``search`` with the text queries of ``query``/``retriever`` rewritten first.

        Args:
            **kwargs: The client's ``search`` arguments, ``body=`` or keyword style.

        Returns:
            The client's response, with ``"tsqr"`` metadata unless ``annotate_response=False``.
        """
        if self.settings.fusion is not None:
            return self._fused_search(kwargs)
        return self._run(self._search_job, self.client.search, kwargs)

    def msearch(self, **kwargs):
        """The client's ``msearch``, every search of the batch rewritten with one rewriter call.

        Args:
            **kwargs: The client's ``msearch`` arguments: ``searches=[header, body, ...]`` or ``body=``
                as such a list (NDJSON strings pass through untouched). With ``fusion="rrf"``, each
                search is fused as ``search()`` fuses it, all in one ``_msearch`` (with a ``budget``,
                a rewrite later than it leaves its searches as written).
        """
        if self.settings.fusion is not None:
            return self._fused_msearch(kwargs)
        return self._run(self._msearch_job, self.client.msearch, kwargs)

    def _fused_msearch(self, kwargs: dict):
        job = self._fused_msearch_job(kwargs)
        if job is None:  # the stage as without fusion (it handles what it cannot read)
            response = self._run(self._msearch_job, self.client.msearch, kwargs)
            return note(response, {"fused": False, "fusion": {"reason": "no text query to rewrite"}})
        self.last_rewrites, self.last_samples = [], []
        samples, rows = None, []
        try:
            rows = self._rows(job, self.settings.budget)
            self._keep(rows)
            request, infos = self._with_joined(job, rows)
            if self.settings.samples > 1:
                samples = [self._built(one) for one in self._sample_jobs(self._msearch_job, kwargs, rows)]
        except Exception as error:
            request, infos = kwargs, self._failed(error, False, len(job.plans))
        call, slots = fusedmsearch.plan(kwargs, request, infos, samples)
        return self._fused_items(self.client.msearch(**call), slots, self._slot_infos(job, slots, infos, samples, rows))

    def _fused_search(self, kwargs: dict):
        job, target, reason = self._fusion_plan(kwargs)
        if target is None:  # the stage as without fusion, the budget bounding the rewrite
            response = self._run(self._search_job, self.client.search, kwargs, self.settings.budget)
            return note(response, {"fused": False, "fusion": {"reason": reason}})
        if self.settings.budget is not None:
            return self._anytime(kwargs, job, target)
        self.last_rewrites, self.last_samples = [], []
        try:
            rows, searches, info = self._sample_searches(job, kwargs)
            self._keep(rows)
        except Exception as error:
            searches, info = None, self._failed(error, True, 1)
        if searches is None or not info["rewritten"]:
            return self._respond(self.client.search(**kwargs), self._unfused(info, NOTHING_REWRITTEN, "original"))
        rewritten = [fusedsearch.split(request)[0] for request in searches.values()]
        response = self.client.msearch(**fusedsearch.msearch_call(target, rewritten, self.BODY_AS_KEYWORDS))
        body = fusedsearch.body_of(response)
        first, *rest = body["responses"]
        answer, info = self._fused_answer(target, first, rest, info, body.get("took"), list(searches))
        if answer is None:
            return self._respond(self.client.search(**kwargs), info)
        return self._respond(fusedsearch.like(response, answer), info)

    def _anytime(self, kwargs: dict, job: Job, target: Split):
        """The original searched at once (in a worker thread), the rewrites prepared meanwhile
        within the budget (its deadline in the thread for backends that stop early; several samples
        come from one engine call, all waited for), then the rewritten searches side by side: the
        caller waits at most the budget plus one search, never for the model."""
        started = time.monotonic()
        pool = ThreadPoolExecutor(1, thread_name_prefix="tsqr-original-search")
        original: Future = pool.submit(self.client.search, **fusedsearch.paged(kwargs, target.depth,
                                                                               self.BODY_AS_KEYWORDS))
        pool.shutdown(wait=False)
        self.last_rewrites, self.last_samples = [], []
        searches, in_time = None, True
        try:
            rows, searches, info = call_with_deadline(functools.partial(self._sample_searches, job, kwargs),
                                                      self.settings.budget)
            self._keep(rows)
        except Exception as error:
            in_time = not isinstance(error, BackendTimeout) or self._in_time(started)
            info = self._failed(error, True, 1) if in_time else self._late_or_raise(job, error)
        anytime = self._anytime_info(started, in_time)
        rewritten = None
        if searches is not None and info["rewritten"]:
            def search_rewritten(request: dict) -> Any:
                try:
                    return self.client.search(**fusedsearch.paged(request, target.depth, self.BODY_AS_KEYWORDS, True))
                except Exception as error:  # the engine refused a rewritten search: the original's answer
                    return error

            requests = list(searches.values())
            if len(requests) == 1:
                rewritten = [search_rewritten(requests[0])]
            else:  # the samples' searches side by side: the wait is one search, as the async client's
                with ThreadPoolExecutor(len(requests), thread_name_prefix="tsqr-rewritten-search") as samples:
                    rewritten = list(samples.map(search_rewritten, requests))
        return self._anytime_answer(target, original.result(), rewritten, info, anytime, list(searches or {}))

    def _rows(self, job: Job, budget: float | None = None) -> list[list[Rewrite]]:
        """Each text query's samples, from one rewriter call (within ``budget`` if given)."""
        return sampled_rows(self.rewriter, job.texts, self.settings.samples, budget) if job.texts else []

    def _built(self, job: Job) -> tuple[dict, Any]:
        """A job whose plans hold their rewrites as a request and its metadata (BM25Q's
        ``_termvectors`` asked first)."""
        stats = {where: self._termvectors(*where) for where in job.stats_keys(self.settings)}
        return job.finish(self.settings, stats)

    def _with_joined(self, job: Job, rows: list[list[Rewrite]]) -> tuple[dict, Any]:
        """The request with each text query's samples joined (the rewrite, with one sample), and
        its metadata."""
        job.assign([join_samples(row) for row in rows])
        request, info = self._built(job)
        return request, self._described(job, info, rows)

    def _sample_searches(self, job: Job, kwargs: dict,
                         budget: float | None = None) -> tuple[list[list[Rewrite]], dict[int, dict], dict]:
        """A fused ``search()``'s rewrites: the samples, the rewritten search of each sample that
        holds a rewrite (by sample), and the metadata. Sets nothing on the stage (anytime runs it in
        a worker thread that may end late)."""
        rows = self._rows(job, budget)
        if self.settings.samples == 1:
            request, info = self._with_joined(job, rows)
            return rows, {0: request}, info
        built = [self._built(one) for one in self._sample_jobs(self._search_job, kwargs, rows)]
        infos = [info for _, info in built]
        return rows, {n: built[n][0] for n in stagesamples.searched(infos)}, stagesamples.merged(infos, rows)

    def _run(self, make_job, send, kwargs, budget: float | None = None):
        request, info = kwargs, None
        job = None
        self.last_rewrites, self.last_samples = [], []
        try:
            job = make_job(kwargs)
            if job is not None:
                rows = self._rows(job, budget)
                self._keep(rows)
                request, info = self._with_joined(job, rows)
        except Exception as error:
            request = kwargs
            info = self._failed(error, job.single if job else True, len(job.plans) if job else 1)
        try:
            response = send(**request)
        except Exception as error:
            fallback = self._clause_limit_fallback(error, request is not kwargs)
            if fallback is None:
                raise
            return self._respond(send(**kwargs), fallback)
        fallback = self._clause_limit_fallback(shard_failures(response), request is not kwargs)
        return self._respond(send(**kwargs), fallback) if fallback else self._respond(response, info)

    def _termvectors(self, index: str | None, key: StatsKey) -> dict | None:
        request = self._termvectors_request(index, key)
        if request is None:
            return None
        try:
            response = self.client.termvectors(**request)
        except Exception as error:  # the search still goes out, with match scoring
            self._termvectors_failed(index, error)
            return None
        return dict(getattr(response, "body", response))


class AsyncRewritingSearchClient(ClientStage):
    """An async client (``AsyncElasticsearch`` / ``AsyncOpenSearch``): the rewrite runs in a worker
    thread, so the event loop keeps serving while the model generates; the rewriter's ``timeout``
    counts from the call, the wait for a thread included. Fail-open as the sync client."""

    async def search(self, **kwargs):
        """The client's ``search`` with the text queries rewritten first (see the sync client).

        Args:
            **kwargs: The client's ``search`` arguments, ``body=`` or keyword style.
        """
        if self.settings.fusion is not None:
            return await self._fused_search(kwargs)
        return await self._run(self._search_job, self.client.search, kwargs)

    async def msearch(self, **kwargs):
        """The client's ``msearch``, every search of the batch rewritten with one rewriter call.

        Args:
            **kwargs: The client's ``msearch`` arguments (``searches=`` or ``body=``); fused as the
                sync client's.
        """
        if self.settings.fusion is not None:
            return await self._fused_msearch(kwargs)
        return await self._run(self._msearch_job, self.client.msearch, kwargs)

    async def _fused_msearch(self, kwargs: dict):
        job = self._fused_msearch_job(kwargs)
        if job is None:
            response = await self._run(self._msearch_job, self.client.msearch, kwargs)
            return note(response, {"fused": False, "fusion": {"reason": "no text query to rewrite"}})
        self.last_rewrites, self.last_samples = [], []
        samples, rows = None, []
        try:
            rows = await self._rows(job, self.settings.budget)
            self._keep(rows)
            request, infos = await self._with_joined(job, rows)
            if self.settings.samples > 1:
                samples = [await self._built(one) for one in self._sample_jobs(self._msearch_job, kwargs, rows)]
        except Exception as error:
            request, infos = kwargs, self._failed(error, False, len(job.plans))
        call, slots = fusedmsearch.plan(kwargs, request, infos, samples)
        return self._fused_items(await self.client.msearch(**call), slots,
                                 self._slot_infos(job, slots, infos, samples, rows))

    async def _fused_search(self, kwargs: dict):
        job, target, reason = self._fusion_plan(kwargs)
        if target is None:
            response = await self._run(self._search_job, self.client.search, kwargs, self.settings.budget)
            return note(response, {"fused": False, "fusion": {"reason": reason}})
        if self.settings.budget is not None:
            return await self._anytime(kwargs, job, target)
        self.last_rewrites, self.last_samples = [], []
        try:
            rows, searches, info = await self._sample_searches(job, kwargs)
            self._keep(rows)
        except Exception as error:
            searches, info = None, self._failed(error, True, 1)
        if searches is None or not info["rewritten"]:
            return self._respond(await self.client.search(**kwargs), self._unfused(info, NOTHING_REWRITTEN, "original"))
        rewritten = [fusedsearch.split(request)[0] for request in searches.values()]
        response = await self.client.msearch(**fusedsearch.msearch_call(target, rewritten, self.BODY_AS_KEYWORDS))
        body = fusedsearch.body_of(response)
        first, *rest = body["responses"]
        answer, info = self._fused_answer(target, first, rest, info, body.get("took"), list(searches))
        if answer is None:
            return self._respond(await self.client.search(**kwargs), info)
        return self._respond(fusedsearch.like(response, answer), info)

    async def _anytime(self, kwargs: dict, job: Job, target: Split):
        """The original searched at once, the rewrites prepared meanwhile within the budget, then
        the rewritten searches, together (see the sync client)."""
        started = time.monotonic()
        original = asyncio.ensure_future(self.client.search(**fusedsearch.paged(kwargs, target.depth,
                                                                                self.BODY_AS_KEYWORDS)))
        try:
            self.last_rewrites, self.last_samples = [], []
            searches, in_time = None, True
            try:
                rows, searches, info = await asyncio.wait_for(
                    self._sample_searches(job, kwargs, self.settings.budget), self.settings.budget)
                self._keep(rows)
            except Exception as error:
                in_time = not isinstance(error, (BackendTimeout, asyncio.TimeoutError)) or self._in_time(started)
                info = self._failed(error, True, 1) if in_time else self._late_or_raise(job, error)
            anytime = self._anytime_info(started, in_time)
            rewritten = None
            if searches is not None and info["rewritten"]:
                rewritten = list(await asyncio.gather(
                    *(self.client.search(**fusedsearch.paged(request, target.depth, self.BODY_AS_KEYWORDS, True))
                      for request in searches.values()), return_exceptions=True))
            return self._anytime_answer(target, await original, rewritten, info, anytime, list(searches or {}))
        finally:
            if not original.done():
                original.cancel()

    async def _rows(self, job: Job, budget: float | None = None) -> list[list[Rewrite]]:
        if not job.texts:
            return []
        return await samples_within_budget(self.rewriter, job.texts, self.settings.samples, budget)

    async def _built(self, job: Job) -> tuple[dict, Any]:
        keys = job.stats_keys(self.settings)
        answers = await asyncio.gather(*(self._termvectors(*where) for where in keys))
        return job.finish(self.settings, dict(zip(keys, answers)))

    async def _with_joined(self, job: Job, rows: list[list[Rewrite]]) -> tuple[dict, Any]:
        job.assign([join_samples(row) for row in rows])
        request, info = await self._built(job)
        return request, self._described(job, info, rows)

    async def _sample_searches(self, job: Job, kwargs: dict,
                               budget: float | None = None) -> tuple[list[list[Rewrite]], dict[int, dict], dict]:
        rows = await self._rows(job, budget)
        if self.settings.samples == 1:
            request, info = await self._with_joined(job, rows)
            return rows, {0: request}, info
        built = [await self._built(one) for one in self._sample_jobs(self._search_job, kwargs, rows)]
        infos = [info for _, info in built]
        return rows, {n: built[n][0] for n in stagesamples.searched(infos)}, stagesamples.merged(infos, rows)

    async def _run(self, make_job, send, kwargs, budget: float | None = None):
        request, info = kwargs, None
        job = None
        self.last_rewrites, self.last_samples = [], []
        try:
            job = make_job(kwargs)
            if job is not None:
                rows = await self._rows(job, budget)
                self._keep(rows)
                request, info = await self._with_joined(job, rows)
        except Exception as error:
            request = kwargs
            info = self._failed(error, job.single if job else True, len(job.plans) if job else 1)
        try:
            response = await send(**request)
        except Exception as error:
            fallback = self._clause_limit_fallback(error, request is not kwargs)
            if fallback is None:
                raise
            return self._respond(await send(**kwargs), fallback)
        fallback = self._clause_limit_fallback(shard_failures(response), request is not kwargs)
        return self._respond(await send(**kwargs), fallback) if fallback else self._respond(response, info)

    async def _termvectors(self, index: str | None, key: StatsKey) -> dict | None:
        request = self._termvectors_request(index, key)
        if request is None:
            return None
        try:
            response = await self.client.termvectors(**request)
        except Exception as error:
            self._termvectors_failed(index, error)
            return None
        return dict(getattr(response, "body", response))
