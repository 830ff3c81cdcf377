"""A stateful test of `tsqr serve` (issue 21, "generators, not only cases"): hypothesis interleaves
clients and upstream failures against one real `tsqr serve --rewriter openai` process in front of a
fake model server whose behaviour changes between steps.

Rules: rewrite requests (one query or several, duplicates, any Unicode, strict or not), requests
with a tiny 'timeout', requests for several samples ('n') in every mode, rrf included, bodies whose
n, mode, rrf_k and weights (and 'match' in place of 'queries') are each drawn valid, invalid or
absent (a 400 naming a field it breaks, else the documented answer: n samples, fallbacks marked,
rrf's searches and fusion, an exact replay), chat requests (model tsqr-rewrite, our own prompt, another conversation), a
client that disconnects before its body or while waiting for its answer, a burst past --max-queue;
and the upstream made slow, made to fail (500), made to answer garbage, stopped and restarted.

Checked on every answer: each rewrite's 'original' is what was sent, in order; a rewrite that is
not a fallback is exactly what the upstream produced for that query (its answer names the query, so
a mix-up shows); a fallback's text is its query; a non-strict request never gets a 5xx; nothing
takes much longer than the service's time budget; once the upstream answers again, a query whose
last request ended (not by a timeout) is rewritten, not answered from a stored failure. A request
with 'n' gets n samples per query, each one the upstream produced for that query as that sample (or
its query, on a fallback), its text and mode rrf's searches made of them; asked again at once, one
whose samples were all rewritten is answered the same texts, every one from the cache. Checked
after every step: /health answers 200 within a bound, the queue gauge stays within --max-queue, and
the process's open descriptors (/proc/<pid>/fd) and resident memory stay within a bound of their
start. Checked at the end of every example (and by a rule, at any step): once nothing is asked, the
/metrics queue depth is back to 0; and once the upstream answers well again, every query the
example sent is rewritten within a bound (none waits on a generation that never ends).

One service process per test run, shared by the examples (a process per example would spend the
time budget on start-ups): the descriptor and memory bounds hold over the whole run, and the rewrite
cache carries over (a failure message names the step that last answered a query, in whichever
example). Examples run until TSQR_STATES_BUDGET seconds (60) are spent; later ones skip their
steps. The first broken invariant ends the run with the example's steps and the seed
(TSQR_STATES_SEED reruns the same sequence): hypothesis neither shrinks nor replays it, since a
replay would start from another state of the shared process.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import httpx
import pytest

pytest.importorskip("uvicorn", reason="tsqr serve needs the 'serve' extra")
hypothesis = pytest.importorskip("hypothesis", reason="the stateful test needs the 'dev' extra (hypothesis)")
from hypothesis import HealthCheck, Phase, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test  # noqa: E402

from tests.conftest import REPO  # noqa: E402
from tests.recording_server import RecordingOpenAIServer  # noqa: E402
from tests.test_serve_process import wait_until_up  # noqa: E402
from tsqr_plugins.prompts import PAPER_USER_TEMPLATE, get_prompt  # noqa: E402
from tsqr_plugins.testing.service import free_port  # noqa: E402

SEED = int(os.environ.get("TSQR_STATES_SEED", "20260121"))
TIME_BUDGET = float(os.environ.get("TSQR_STATES_BUDGET", "60"))  # seconds; the last example started finishes
TIMEOUT = 1.5  # the service's --timeout
MAX_QUEUE = 4
LATE = TIMEOUT + 6.0  # no answer may take longer (a loaded 2-core machine included)
HEALTH_BOUND = 2.0
IDLE_BOUND = 15.0  # the longest queued work: a batch retrying a stopped upstream (~5 s) and a slow one
FD_SLACK = 48  # descriptors over the idle start: this test's own connections, the upstream pool
RSS_SLACK = 64 * 2**20
HEAD, _, TAIL = PAPER_USER_TEMPLATE.partition("{question}")
# what the upstream answers instead of a rewrite: a 200 body that is no chat completion, or a
# completion whose text is no rewrite (empty; a lone surrogate, valid as a JSON escape but not text)
GARBAGE_BODIES = {"no choices": b'{"choices": []}', "not json": b"<html>502 Bad Gateway</html>"}
GARBAGE_TEXTS = {"empty text": lambda query: "", "lone surrogate": lambda query: "\ud800" + rewritten(query)}
GARBAGE = [*GARBAGE_BODIES, *GARBAGE_TEXTS]


def rewritten(query: str) -> str:
    """The fake upstream's answer for ``query``: it names the query, so an answer given to another
    query is seen."""
    return f"rewritten<{query}>"


class Upstream:
    """The fake model server, behaving as the last upstream rule said: a delay, a failure (500,
    garbage) or none, stopped or running. It records every text it answered, by query."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.failure: str | None = None
        self.produced: dict[str, set[str]] = defaultdict(set)
        # query -> sample index -> the texts answered as that sample (a request with n answers n)
        self.produced_samples: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
        self._lock = threading.Lock()
        self.server: RecordingOpenAIServer | None = None
        self.port = 0
        self.start()
        self.base_url = self.server.base_url

    def __str__(self) -> str:
        return "stopped" if not self.running else f"answering {self.failure or 'well'} after {self.delay:g} s"

    @property
    def running(self) -> bool:
        return self.server is not None

    @property
    def healthy(self) -> bool:
        return self.running and self.failure is None and self.delay < 0.5

    def _answer(self, body) -> str:
        content = body["messages"][-1]["content"]
        query = content[len(HEAD):len(content) - len(TAIL)] if content.startswith(HEAD) and content.endswith(TAIL) else content
        text = GARBAGE_TEXTS.get(self.failure, rewritten)(query)
        with self._lock:
            self.produced[query].add(text)
            for index in range(body.get("n", 1)):  # the recording server's sample i: the text + " (sample i)"
                self.produced_samples[query][index].add(text if index == 0 else f"{text} (sample {index})")
        return text

    def apply(self) -> None:
        if self.server is None:
            return
        self.server.delay = self.delay
        self.server.fail_first = 10**9 if self.failure == "500" else 0
        self.server.fail_status = 500
        self.server.malformed = GARBAGE_BODIES.get(self.failure, False)

    def start(self) -> None:
        if self.server is None:
            self.server = RecordingOpenAIServer(answer=self._answer, port=self.port).__enter__()
            self.port = int(self.server.url.rsplit(":", 1)[1])
            self.apply()

    def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            if server.hold is not None:
                server.hold.set()
            server.__exit__(None, None, None)


class Harness:
    """The one `tsqr serve` process of the run, its upstream, and what the run has measured."""

    def __init__(self, tmp_path) -> None:
        self.upstream = Upstream()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "serve.log"
        env = {key: value for key, value in os.environ.items() if key not in ("TSQR_API_KEY", "TSQR_UPSTREAM_API_KEY")}
        command = [sys.executable, "-m", "tsqr_plugins.cli", "serve", "--rewriter", "openai",
                   "--upstream", self.upstream.base_url, "--port", str(self.port),
                   "--cache", str(tmp_path / "rewrites.sqlite"), "--timeout", str(TIMEOUT),
                   "--max-queue", str(MAX_QUEUE), "--max-batch-size", "2", "--concurrent-batches", "2"]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        self.client = httpx.Client(timeout=30)
        self.fresh = itertools.count()
        # query -> the step whose answer ended its last generation (not a timeout): nothing of it runs since
        self.settled: dict[str, str] = {}
        # (query, n) -> the same for its n > 1 samples, generated apart from its single rewrite
        self.settled_samples: dict[tuple[str, int], str] = {}
        self.budget_end = 0.0
        self.examples = {"run": 0, "skipped": 0}
        self.seen: Counter[str] = Counter()  # outcomes, printed: what the run exercised
        self.steps: list[str] = []
        self.baseline_fds = self.baseline_rss = 0
        self.max_fds = self.max_rss = 0

    def ready(self) -> None:
        wait_until_up(f"{self.url}/health", self.process, 60, self.log_path)
        for query in ("warm up", "warm up two"):  # the pools and caches a first request opens
            self.client.post(f"{self.url}/v1/rewrite", json={"queries": [query]})
        self.client.post(f"{self.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        time.sleep(0.2)
        self.baseline_fds, self.baseline_rss = self.fds(), self.rss()
        self.budget_end = time.monotonic() + TIME_BUDGET

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

    def metric(self, name: str) -> float:
        text = self.client.get(f"{self.url}/metrics").text
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert found, f"{name} not in /metrics"
        return float(found.group(1))

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()
        self.upstream.stop()


NEW = ("<new query 1>", "<new query 2>")  # queries new to this example (the cache keeps what others sent)
queries = st.one_of(
    st.sampled_from(["moths", "why do moths fly to light", "naïve Bayes ∑ x²", "日本語の質問", "🦋 emoji",
                     "  padded  ", "Query: nested", "line\nbreak", "{braces} $x^2$", *NEW, *NEW]),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(str.strip),
)


# Request fields around n and mode rrf, each drawn valid or not; ABSENT leaves the field out.
ABSENT = object()
MAX_SAMPLES = 16  # tsqr serve's default --max-samples
FUSION_FIELDS = ("rrf_k", "original_weight", "rewrite_weight")
GOOD_N = st.integers(1, 4)
BAD_N = st.sampled_from([0, -1, MAX_SAMPLES + 1, True, False, 2.5, 2.0, "2", None, [2], {"n": 2}, 10**20, float("nan")])
GOOD_MODES = st.sampled_from(["replace", "concat", "adaptive", "both", "rrf"])
BAD_MODES = st.sampled_from(["RRF", "match", "fuse", "", None, ["rrf"], 3])
GOOD_FUSION = st.sampled_from([0, 1, 60, 0.5, 2.5, 10**6])
BAD_FUSION = st.sampled_from([-1, -0.5, "60", True, None, [60], float("nan"), float("inf"), 10**20])


def unsendable(value) -> bool:
    """A value tsqr serve refuses as JSON before reading any field: NaN/Infinity, an integer of
    more than 18 digits."""
    return (isinstance(value, float) and not abs(value) < float("inf")) or (
        isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**18)


def body_problems(body: dict) -> list[str]:
    """What a 400 for ``body`` must name (any of them: the service answers the first it finds);
    none for a body it must answer. The test's own reading of docs/serve.md, not the service's."""
    if any(unsendable(value) for value in body.values()):
        return ["malformed JSON"]
    problems = []
    mode = body.get("mode", "replace")
    if "match" in body and mode not in ("replace", "concat", "adaptive"):
        problems.append("'match' takes mode")
    if not (isinstance(mode, str) and mode in ("replace", "concat", "adaptive", "both", "rrf")):
        problems.append("unknown mode")
    if "n" in body:
        n = body["n"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
            problems.append("'n'")
        elif "match" in body:
            problems.append("'n' takes 'queries'")
    for name in FUSION_FIELDS:
        if name not in body:
            continue
        value = body[name]
        if mode != "rrf":
            problems.append("mode rrf")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            problems.append(f"'{name}'")
    return problems


class ServiceBroke(BaseException):
    """A broken invariant, with the example's steps. Not an Exception, so that hypothesis stops at the
    first one rather than replaying the example: the service and its cache are shared by the examples,
    so a replay starts from another state (a leak fails sooner), which hypothesis reports as flaky."""


def reported(step):
    """A rule, invariant or teardown whose every failure (an HTTP error too) is a ServiceBroke."""
    @functools.wraps(step)
    def run(self, *args, **kwargs):
        try:
            return step(self, *args, **kwargs)
        except Exception as error:
            self._fail(f"{type(error).__name__}: {error}")
    return run


class ServiceStates(RuleBasedStateMachine):
    harness: Harness  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.h = self.harness
        self.up = self.h.upstream
        self.h.steps = []
        self.sent: dict[str, None] = {}  # every query this example sent, in order
        # The run's time budget: a later example draws its steps as usual (hypothesis checks that a
        # choice sequence draws the same way each time) but does nothing.
        self.skip = time.monotonic() > self.h.budget_end
        self.h.examples["skipped" if self.skip else "run"] += 1

    # ---- helpers
    def _begin(self, step: str) -> bool:
        """Whether to take the step (not past the time budget); it is logged for a failure's message."""
        if not self.skip:
            self.h.steps.append(step)
            self.h.seen["step " + step.split("(")[0]] += 1
        return not self.skip

    def _fail(self, message: str) -> None:
        steps = "\n  ".join(self.h.steps)
        raise ServiceBroke(f"{message}\n(seed TSQR_STATES_SEED={SEED}; example {self.h.examples['run']}'s steps:\n  {steps})")

    def _check(self, condition: bool, message: str) -> None:
        if not condition:
            self._fail(message)

    def _settle(self, query: str, how: str) -> None:
        self.h.settled[query] = (f"{how}, in example {self.h.examples['run']} step {len(self.h.steps)}: "
                                 f"{self.h.steps[-1]} with the upstream {self.up}")

    def _unsettle(self, sent: list[str]) -> None:
        for query in sent:
            self.h.settled.pop(query, None)

    def _name(self, sent: list[str]) -> list[str]:
        example = self.h.examples["run"]
        sent = [f"new query {NEW.index(query) + 1} of example {example} ñ" if query in NEW else query for query in sent]
        self.sent.update(dict.fromkeys(sent))
        return sent

    def _post(self, path: str, body: dict) -> httpx.Response:
        started = time.monotonic()
        # json.dumps as Python writes it: NaN and Infinity too (httpx's json= refuses them)
        answer = self.h.client.post(self.h.url + path, content=json.dumps(body).encode(),
                                    headers={"Content-Type": "application/json"})
        took = time.monotonic() - started
        self._check(took < LATE, f"{path} took {took:.1f} s (time budget {TIMEOUT} s): {body}")
        return answer

    def _check_rewrites(self, sent: list[str], strict: bool, answer: httpx.Response, healthy: bool) -> None:
        status = answer.status_code
        self.h.seen[f"{'strict' if strict else 'non-strict'} {status}"] += 1
        if status == 429:
            self._check(answer.headers.get("retry-after") == "1", "a 429 without Retry-After")
            return
        if status in (502, 504) and strict:
            self._check(not (status == 502 and healthy and all(query in self.h.settled for query in sent)),
                        f"strict 502 for {sent} while the upstream answers (a stored failure?): {answer.text}; "
                        f"their last answers: {[self.h.settled.get(query) for query in sent]}")
            self._unsettle(sent)
            return
        self._check(status == 200, f"{status} for {'strict' if strict else 'non-strict'} {sent}: {answer.text}")
        rewrites = answer.json()["rewrites"]
        self._check([r["original"] for r in rewrites] == sent, f"originals {[r['original'] for r in rewrites]} "
                                                               f"for {sent}")
        for rewrite in rewrites:
            query = rewrite["original"]
            if healthy and query in self.h.settled:
                self.h.seen["asked again, nothing of it running, the upstream well"] += 1
            if rewrite["fallback"]:
                self._check(not strict, f"a strict request got a fallback: {rewrite}")
                self._check(rewrite["text"] == query, f"a fallback's text is not its query: {rewrite}")
                timed_out = rewrite["reason"].startswith("BackendTimeout")
                self.h.seen["fallback: " + ("timeout" if timed_out else rewrite["reason"].split(":")[0])] += 1
                self._check(timed_out or not (healthy and query in self.h.settled),
                            f"{query!r} fell back while the upstream answers, and no earlier generation of it "
                            f"was running: {rewrite}; its last answer: {self.h.settled.get(query)}")
                if timed_out:
                    self._unsettle([query])
                else:
                    self._settle(query, f"a fallback ({rewrite['reason'][:60]})")
            else:
                self.h.seen["rewritten"] += 1
                self._check(rewrite["text"] == rewritten(query) and rewrite["text"] in self.up.produced[query],
                            f"{query!r} was answered {rewrite['text']!r}, not what the upstream produced for it "
                            f"({sorted(self.up.produced[query])})")
                self._settle(query, "rewritten")

    def _past_the_queue(self, sent: list[str], n: int | None, answer: httpx.Response) -> bool:
        """Whether ``answer`` is the 413 of a request asking more generations than --max-queue holds
        (a query with n samples is n; cached or in-flight ones are not asked, so it may also fit);
        a 413 for a request that fits whatever is cached fails the run."""
        if answer.status_code != 413 or "--max-queue" not in answer.text:
            return False
        self._check(len(set(sent)) * (n or 1) > MAX_QUEUE,
                    f"413 for {sent} n={n}, at most {len(set(sent)) * (n or 1)} generations: {answer.text}")
        self.h.seen["request past --max-queue: 413"] += 1
        return True

    def _check_samples(self, sent: list[str], n: int, mode: str, strict: bool, answer: httpx.Response,
                       healthy: bool) -> bool:
        """A request with ``n``: each query's n samples are its own (the upstream produced each for
        that query as that sample, or it is the query, fallen back), its text and rrf's searches are
        made of them, and a sample fell back only by a timeout or while the upstream fails (or a
        generation of it started then was running). Whether every sample of every query was rewritten."""
        status = answer.status_code
        self.h.seen[f"samples {'strict' if strict else 'non-strict'} {status}"] += 1
        settled = self.h.settled if n == 1 else self.h.settled_samples
        keys = [query if n == 1 else (query, n) for query in sent]
        if status == 429:
            self._check(answer.headers.get("retry-after") == "1", "a 429 without Retry-After")
            return False
        if self._past_the_queue(sent, n, answer):
            return False
        if status in (502, 504) and strict:
            self._check(not (status == 502 and healthy and all(key in settled for key in keys)),
                        f"strict 502 for {sent} n={n} while the upstream answers: {answer.text}")
            for key in keys:
                settled.pop(key, None)
            return False
        self._check(status == 200, f"{status} for n={n} {sent}: {answer.text}")
        rewrites = answer.json()["rewrites"]
        self._check([r["original"] for r in rewrites] == sent, f"originals {[r['original'] for r in rewrites]} for {sent}")
        every = True
        for key, rewrite in zip(keys, rewrites):
            query, samples = rewrite["original"], rewrite["samples"]
            self._check(len(samples) == n, f"{len(samples)} samples of {query!r} for n={n}: {rewrite}")
            texts = []
            for index, sample in enumerate(samples):
                if sample["fallback"]:
                    self._check(not strict and sample["text"] == query and sample["reason"],
                                f"sample {index} of {query!r} fell back as {sample} (strict={strict})")
                    timed_out = sample["reason"].startswith("BackendTimeout")
                    self.h.seen["sample fallback: " + ("timeout" if timed_out else sample["reason"].split(":")[0])] += 1
                    self._check(timed_out or not (healthy and key in settled),
                                f"sample {index} of {query!r} fell back while the upstream answers and nothing of "
                                f"it was running: {sample}; its last answer: {settled.get(key)}")
                else:
                    self.h.seen["sample rewritten"] += 1
                    self._check(sample["text"] in self.up.produced_samples[query][index],
                                f"sample {index} of {query!r} is {sample['text']!r}, not what the upstream produced "
                                f"as it ({sorted(self.up.produced_samples[query][index])})")
                    texts.append(sample["text"])
            every = every and len(texts) == n
            fallback = not texts
            self._check(rewrite["fallback"] == fallback, f"fallback {rewrite['fallback']} with {samples}")
            joined = " ".join(s["text"] for s in samples)
            expected = query if fallback else {"concat": " ".join([query] * 5 + [joined])}.get(mode, joined)
            if mode == "adaptive" and not fallback:
                self._check(rewrite["text"].endswith(joined), f"adaptive text {rewrite['text']!r} of {samples}")
            else:
                self._check(rewrite["text"] == expected, f"mode {mode} text {rewrite['text']!r}, not {expected!r}")
            if mode == "rrf":
                self._check(rewrite["searches"] == [query, *texts], f"searches {rewrite['searches']} of {samples}")
                self._check(rewrite["fusion"] == {"method": "rrf", "k": 60, "weights": [1.0] * (len(texts) + 1)},
                            f"fusion {rewrite['fusion']}")
            if any(s["fallback"] and s["reason"].startswith("BackendTimeout") for s in samples):
                settled.pop(key, None)
            else:
                settled[key] = (f"in example {self.h.examples['run']} step {len(self.h.steps)}: {self.h.steps[-1]} "
                                f"with the upstream {self.up}")
        return every

    # ---- clients
    @rule(sent=st.lists(queries, min_size=1, max_size=4), strict=st.booleans())
    @reported
    def rewrite(self, sent, strict):
        sent = self._name(sent)
        if not self._begin(f"rewrite({sent!r}, strict={strict})"):
            return
        healthy = self.up.healthy
        self._check_rewrites(sent, strict, self._post("/v1/rewrite", {"queries": sent, "strict": strict}), healthy)

    @rule(sent=st.lists(queries, min_size=1, max_size=3), timeout=st.sampled_from([0.001, 0.05, 0.3]),
          strict=st.booleans())
    @reported
    def rewrite_with_a_tiny_timeout(self, sent, timeout, strict):
        sent = self._name(sent)
        if not self._begin(f"rewrite({sent!r}, strict={strict}, timeout={timeout})"):
            return
        healthy = self.up.healthy
        answer = self._post("/v1/rewrite", {"queries": sent, "strict": strict, "timeout": timeout})
        self._check_rewrites(sent, strict, answer, healthy)

    @rule(sent=st.lists(queries, min_size=1, max_size=3), n=st.integers(1, 4),
          mode=st.sampled_from(["replace", "concat", "adaptive", "both", "rrf"]), strict=st.booleans())
    @reported
    def rewrite_samples(self, sent, n, mode, strict):
        """Several samples per query in a mode; one whose samples were all rewritten, asked again
        at once, is answered the same texts, every sample from the cache (no model call)."""
        sent = self._name(sent)
        if not self._begin(f"rewrite_samples({sent!r}, n={n}, mode={mode!r}, strict={strict})"):
            return
        body = {"queries": sent, "n": n, "mode": mode, "strict": strict}
        healthy = self.up.healthy
        answer = self._post("/v1/rewrite", body)
        if not self._check_samples(sent, n, mode, strict, answer, healthy):
            return
        replay = self._post("/v1/rewrite", body)
        self._check(replay.status_code == 200, f"replay of {body}: {replay.status_code} {replay.text}")
        first, again = answer.json()["rewrites"], replay.json()["rewrites"]
        self._check([r["samples"] for r in again] == [[{**s, "cached": True} for s in r["samples"]] for r in first],
                    f"replay of {body} is not exact, every sample from the cache: {again} after {first}")
        self.h.seen["samples replayed from the cache"] += 1

    @rule(sent=st.lists(queries, min_size=1, max_size=3), data=st.data(), strict=st.booleans())
    @reported
    def rewrite_any_body(self, sent, data, strict):
        """A body around n and mode rrf with each field drawn valid, invalid or absent ('match' in
        place of 'queries' too): a 400 naming a field it breaks when it breaks one, else the answer
        documented for it: n samples per query (a fallback's text its query, with a reason), the
        entry a fallback only when every sample is, mode rrf's searches the original and each
        sample not fallen back, its fusion the request's k and weights, one weight per search; and
        a request whose samples were all rewritten, asked again, answers the same texts."""
        sent = self._name(sent)
        draw = data.draw
        body: dict = {"match": {"query": sent[0]}} if draw(st.integers(0, 5)) == 0 else {"queries": sent}
        sent = [body["match"]["query"]] if "match" in body else sent
        meant_valid = draw(st.booleans(), label="meant valid")  # else any field may break (most such bodies do)
        if meant_valid:
            body = {"queries": sent}
        for name, good, bad in (("n", GOOD_N, BAD_N), ("mode", GOOD_MODES, BAD_MODES),
                                *((name, GOOD_FUSION, BAD_FUSION) for name in FUSION_FIELDS)):
            if meant_valid and name in FUSION_FIELDS and body.get("mode") != "rrf":
                continue
            value = draw(st.one_of(st.just(ABSENT), good) if meant_valid else st.one_of(st.just(ABSENT), good, bad),
                         label=name)
            if value is not ABSENT:
                body[name] = value
        body["strict"] = strict
        if not self._begin(f"rewrite_any_body({body!r})"):
            return
        self._unsettle(sent)  # what this request generates is not followed by the other rules' bookkeeping
        for n in range(1, 5):
            for query in sent:
                self.h.settled_samples.pop((query, n), None)
        problems = body_problems(body)
        answer = self._post("/v1/rewrite", body)
        status = answer.status_code
        self.h.seen[f"any body {'refused' if problems else 'valid'} {status}"] += 1
        if problems:
            message = answer.json()["error"]["message"] if status == 400 else answer.text
            self._check(status == 400 and any(problem in message for problem in problems),
                        f"{body} must be a 400 naming one of {problems}: {status} {answer.text}")
            return
        if status == 429 or (strict and status in (502, 504)) or self._past_the_queue(sent, body.get("n"), answer):
            return
        self._check(status == 200, f"{status} for the valid {body}: {answer.text}")
        rewrites = answer.json()["rewrites"]
        self._check([r["original"] for r in rewrites] == sent, f"originals {[r['original'] for r in rewrites]} for {sent}")
        n, mode = body.get("n"), body.get("mode", "replace")
        every = True
        for rewrite in rewrites:
            query = rewrite["original"]
            samples = rewrite.get("samples")
            self._check((samples is None) == (n is None) and (n is None or len(samples) == n),
                        f"{body}: {query!r} answered samples {samples}")
            samples = samples or [rewrite]
            for sample in samples:
                self._check(not sample["fallback"] or (sample["text"] == query and sample["reason"] and not strict),
                            f"{body}: a fallen-back sample of {query!r} is {sample}")
            fell_back = [sample["fallback"] for sample in samples]
            every = every and not any(fell_back)
            self._check(rewrite["fallback"] == all(fell_back), f"{body}: fallback {rewrite['fallback']} of {samples}")
            self._check(not rewrite["fallback"] or rewrite["text"] == query, f"{body}: a fallback's text {rewrite}")
            if mode == "rrf":
                searches = [query] + [sample["text"] for sample in samples if not sample["fallback"]]
                weights = [body.get("original_weight", 1.0)] + [body.get("rewrite_weight", 1.0)] * (len(searches) - 1)
                self._check(rewrite["searches"] == searches, f"{body}: searches {rewrite['searches']}, not {searches}")
                self._check(rewrite["fusion"] == {"method": "rrf", "k": body.get("rrf_k", 60), "weights": weights},
                            f"{body}: fusion {rewrite['fusion']}")
        if "match" in body:
            self._check("match" in answer.json(), f"{body}: no 'match' in {answer.text}")
        if not every or n is None:
            return
        replay = self._post("/v1/rewrite", body)
        self._check(replay.status_code == 200, f"replay of {body}: {replay.status_code} {replay.text}")
        again = replay.json()["rewrites"]
        self._check([r["samples"] for r in again] == [[{**s, "cached": True} for s in r["samples"]] for r in rewrites],
                    f"replay of {body} is not exact, every sample from the cache: {again} after {rewrites}")
        self.h.seen["any body replayed from the cache"] += 1

    @rule(query=queries, kind=st.sampled_from(["tsqr-rewrite", "our prompt", "another conversation"]))
    @reported
    def chat(self, query, kind):
        query = self._name([query])[0]
        if not self._begin(f"chat({query!r}, {kind})"):
            return
        if kind == "tsqr-rewrite":  # fail-open, like a non-strict rewrite
            body = {"model": "tsqr-rewrite", "messages": [{"role": "user", "content": query}]}
        elif kind == "our prompt":  # answered (and cached) like a strict rewrite
            body = {"messages": get_prompt("tsqr-v1").messages(query)}
        else:  # passed to the upstream as it is
            body = {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": query}]}
        answer = self._post("/v1/chat/completions", body)
        self.h.seen[f"chat {kind} {answer.status_code}"] += 1
        self._unsettle([query])
        if answer.status_code == 429 or (kind != "tsqr-rewrite" and answer.status_code in (502, 504)):
            return
        self._check(answer.status_code == 200, f"chat {kind} {query!r}: {answer.status_code} {answer.text}")
        text = answer.json()["choices"][0]["message"]["content"]
        allowed = {rewritten(query), query} if kind == "tsqr-rewrite" else self.up.produced[query]
        self._check(text in allowed, f"chat {kind} {query!r} was answered {text!r}; the upstream produced "
                                     f"{sorted(self.up.produced[query])}")

    @rule(query=queries, when=st.sampled_from(["before its body", "awaiting its answer"]))
    @reported
    def client_disconnects(self, query, when):
        query = self._name([query])[0]
        if not self._begin(f"client_disconnects({query!r}, {when})"):
            return
        body = json.dumps({"queries": [query]}).encode()
        sent = body[:len(body) // 2] if when == "before its body" else body
        with socket.create_connection(("127.0.0.1", self.h.port), timeout=5) as client:
            client.sendall(b"POST /v1/rewrite HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           + f"Content-Length: {len(body)}\r\n\r\n".encode() + sent)
            time.sleep(0.05)
        self._unsettle([query])

    @rule(size=st.integers(12, 16))
    @reported
    def burst_past_the_queue(self, size):
        """While the upstream holds every answer, more new queries than the engine slots, the
        batcher and --max-queue can take: some are refused with 429, the rest answered."""
        if not self._begin(f"burst_past_the_queue({size})"):
            return
        sent = [f"burst {next(self.h.fresh)}" for _ in range(size)]
        self.sent.update(dict.fromkeys(sent))
        hold = threading.Event()
        if self.up.server is not None:
            self.up.server.hold = hold
        healthy = self.up.healthy
        answers: dict[str, httpx.Response] = {}

        def ask(query):
            answers[query] = self.h.client.post(self.h.url + "/v1/rewrite", json={"queries": [query]})

        clients = [threading.Thread(target=ask, args=(query,)) for query in sent]
        for client in clients:
            client.start()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and not any(a.status_code == 429 for a in list(answers.values())):
            time.sleep(0.01)
        hold.set()
        if self.up.server is not None:
            self.up.server.hold = None
        for client in clients:
            client.join(LATE)
        self._check(len(answers) == size, f"{size - len(answers)} of {size} burst requests got no answer")
        for query in sent:
            self._check_rewrites([query], False, answers[query], healthy)
        self._check(any(a.status_code == 429 for a in answers.values()),
                    f"{size} new queries at once with --max-queue {MAX_QUEUE}: none refused "
                    f"({sorted(a.status_code for a in answers.values())})")

    # ---- the upstream
    @rule(state=st.sampled_from(["answers well", "is slow", "is slower", "is slower than the budget", "fails (500)",
                                 *(f"answers garbage: {kind}" for kind in GARBAGE), "stops", "restarts"]))
    @reported
    def upstream(self, state):
        if not self._begin(f"upstream({state!r})"):
            return
        if state == "answers well":
            self.up.delay, self.up.failure = 0.0, None
            self.up.start()
        elif state.startswith("is "):
            self.up.delay = {"is slow": 0.3, "is slower": 1.0, "is slower than the budget": TIMEOUT + 1}[state]
        elif state == "fails (500)":
            self.up.failure = "500"
        elif state.startswith("answers garbage"):
            self.up.failure = state.split(": ")[1]
        elif state == "stops":
            self.up.stop()
        else:
            self.up.start()
        self.up.apply()

    @rule()
    @reported
    def nothing_stays_queued(self):
        if not self._begin("nothing_stays_queued()"):
            return
        self._wait_until_idle()

    def _wait_until_idle(self) -> None:
        deadline = time.monotonic() + IDLE_BOUND
        while (depth := self.h.metric("tsqr_queue_depth")) != 0:
            self._check(time.monotonic() < deadline, f"tsqr_queue_depth is {depth:g} {IDLE_BOUND} s after the "
                                                     f"last request (/health says {self._health()['queue_depth']})")
            time.sleep(0.1)

    # ---- after every step
    def _health(self) -> dict:
        started = time.monotonic()
        answer = self.h.client.get(self.h.url + "/health")
        took = time.monotonic() - started
        self._check(answer.status_code == 200 and took < HEALTH_BOUND, f"/health: {answer.status_code} in {took:.2f} s")
        return answer.json()

    @invariant()
    @reported
    def service_is_well(self):
        self._check(self.h.process.poll() is None, f"tsqr serve exited with {self.h.process.returncode}")
        self._check(self._health()["status"] == "ok", "/health is not ok")
        depth = self.h.metric("tsqr_queue_depth")
        self._check(0 <= depth <= MAX_QUEUE, f"tsqr_queue_depth {depth:g} (--max-queue {MAX_QUEUE})")
        fds, rss = self.h.fds(), self.h.rss()
        self.h.max_fds, self.h.max_rss = max(self.h.max_fds, fds), max(self.h.max_rss, rss)
        self._check(fds <= self.h.baseline_fds + FD_SLACK, f"{fds} open descriptors (at the start {self.h.baseline_fds})")
        self._check(rss <= self.h.baseline_rss + RSS_SLACK,
                    f"resident memory {rss / 2**20:.0f} MiB (at the start {self.h.baseline_rss / 2**20:.0f} MiB)")

    @reported
    def teardown(self):
        """Once the upstream answers well again, nothing stays queued, and every query the example
        sent is rewritten within a bound: none waits on a generation that never ends, none is answered
        from a stored failure. The next example starts from there."""
        self.up.delay, self.up.failure = 0.0, None
        self.up.start()
        self.up.apply()
        if self.skip:
            return
        self._wait_until_idle()
        self.h.steps.append("(teardown: the upstream answers well; every query sent is rewritten)")
        waiting = list(self.sent)
        deadline = time.monotonic() + IDLE_BOUND
        while waiting:
            chunk = waiting[:MAX_QUEUE]  # more new queries than --max-queue are refused whole
            answer = self._post("/v1/rewrite", {"queries": chunk})
            self._check_rewrites(chunk, False, answer, healthy=True)  # a stored failure: at its second answer
            done = {r["original"] for r in answer.json()["rewrites"] if not r["fallback"]} if answer.status_code == 200 else set()
            waiting = [query for query in waiting if query not in done]
            self._check(time.monotonic() < deadline, f"{IDLE_BOUND} s after the upstream answered well, {len(waiting)} "
                                                     f"queries are not rewritten ({waiting[:4]}…): {answer.text[:400]}")
            if not done:  # a 429, or timeouts behind work still on the rewriter
                time.sleep(0.2)


SETTINGS = settings(max_examples=20, stateful_step_count=15, deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate],  # no shrinking: see the module's docstring
                    suppress_health_check=list(HealthCheck))


@pytest.mark.slow
def test_the_service_keeps_its_invariants_through_interleaved_failures(tmp_path):
    harness = Harness(tmp_path)
    started = time.monotonic()
    broke = None
    try:
        harness.ready()
        ServiceStates.harness = harness
        run_state_machine_as_test(seed(SEED)(ServiceStates), settings=SETTINGS)
    except ServiceBroke as error:
        broke = error
    except BaseException:
        print(f"tsqr serve's log: {harness.log_path}\nrerun with TSQR_STATES_SEED={SEED}")
        raise
    finally:
        harness.close()
    print(f"seed {SEED}: {harness.examples['run']} examples in {time.monotonic() - started:.0f} s "
          f"({harness.examples['skipped']} past the time budget); descriptors {harness.baseline_fds} -> at most "
          f"{harness.max_fds}, memory {harness.baseline_rss / 2**20:.0f} -> at most {harness.max_rss / 2**20:.0f} MiB")
    print("outcomes:", dict(sorted(harness.seen.items())))
    if broke is not None:
        pytest.fail(f"{broke}\ntsqr serve's log: {harness.log_path}", pytrace=False)
