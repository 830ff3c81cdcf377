"""Training data: Stack Exchange questions with positive documents, as chat prompts for GRPO.

Sources, all read as streams (the H4 dump is large and never loaded whole):
- ``HuggingFaceH4/stack-exchange-preferences`` from the hub (streaming) or a local copy of its
  files (``.jsonl``/``.json`` lines or ``.parquet``), sampled per Stack Exchange domain (a cap per
  domain, reservoir sampling with a seed), questions with images or over-long questions dropped.
  V2 (the paper's best setting): the accepted answer, else the highest-scored one, is the positive.
  V1: positives from a JSON file of reasoning outputs of a larger model, ``{question: text}``.
- The user's own JSONL of ``{"query": ..., "positives": [...]}``.

Output: a parquet file with ``prompt`` (chat messages: the paper's prompt, empty system turn, or
the think prompt), ``query``, ``positives``, ``think`` (the reward's ground truth), ``domain``, ``qid``.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import InputError
from ..lazy import require
from ..prompts import DEFAULT_PROMPT_ID, TRAINING_USER_TEMPLATE, get_prompt
from ..textfile import open_text, parse_json

logger = logging.getLogger(__name__)

H4_DATASET = "HuggingFaceH4/stack-exchange-preferences"
IMAGE_MARKERS = re.compile(r"<img\b|!\[[^\]]*\]\(|i\.stack\.imgur\.com|\.(png|jpe?g|gif)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Example:
    query: str
    positives: tuple[str, ...]
    domain: str = ""
    qid: str = ""


# The released sampler's targets, verbatim (bigai-nlco/TongSearch-QR scripts/data_process/
# sample_stackexchange.py TARGETS). Its domain parsing never yields "Stackoverflow" (see
# released_domain_of), so as released no Stack Overflow question is ever sampled.
RELEASED_DOMAINS = ("Stackoverflow", "biology", "chemistry", "codereview", "cs", "earthscience", "economics",
                    "math", "robotics")
SAMPLERS = ("released", "reservoir")


@dataclass(frozen=True)
class SamplingSettings:
    """Defaults are the released sampler's (sample_stackexchange.py: 1,200 per domain, seed 2025,
    its 9 targets; build_dataset.py: questions over 16,000 characters or containing ".png" dropped
    after sampling). ``sampler="reservoir"`` is tsqr's one-pass, memory-bounded alternative."""

    per_domain: int = 1200
    seed: int = 2025
    max_query_chars: int = 16000
    domains: frozenset[str] | None = frozenset(RELEASED_DOMAINS)  # None: every domain
    sampler: str = "released"
    domain_parsing: str = "released"  # released (str.strip('https://'), as released) | fixed
    image_filter: str = "released"  # released (".png" in the question) | wide (any image markup)

    def __post_init__(self):
        for name, allowed in (("sampler", SAMPLERS), ("domain_parsing", ("released", "fixed")),
                              ("image_filter", ("released", "wide"))):
            if getattr(self, name) not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def domain(self, row: dict) -> str:
        return released_domain_of(row) if self.domain_parsing == "released" else domain_of(row)

    def wanted(self, domain: str) -> bool:
        if self.domains is None:
            return True
        if self.domain_parsing == "released":
            return domain in self.domains  # exact, as released
        return domain.lower() in self._lowercase_domains

    @functools.cached_property
    def _lowercase_domains(self) -> frozenset[str]:  # once, not per row of a dump of millions
        return frozenset(d.lower() for d in self.domains or ())

    def keeps(self, query: str) -> bool:
        """build_dataset.py's filters (or the wide image filter)."""
        if not query or len(query) > self.max_query_chars:
            return False
        return ".png" not in query if self.image_filter == "released" else not IMAGE_MARKERS.search(query)


def released_domain_of(row: dict) -> str:
    """The released sampler's parsing: ``metadata[0].strip('https://').split('.')[0]``. ``strip``
    removes characters, not a prefix, so ``stackoverflow.com`` becomes ``ackoverflow``."""
    metadata = row.get("metadata") or [""]
    return str(metadata[0]).strip("https://").split(".")[0]


def domain_of(row: dict) -> str:
    """``biology`` from the question URL in ``metadata`` (``stackoverflow`` for stackoverflow.com)."""
    for url in row.get("metadata") or []:
        host = urlsplit(str(url)).hostname or ""
        if host.endswith(".stackexchange.com"):
            return host[: -len(".stackexchange.com")]
        if host.endswith(".com") and host.count(".") == 1:
            return host[: -len(".com")]
    return "unknown"


def best_answer(answers: Iterable[dict]) -> str | None:
    """The accepted answer, else the highest-scored one (ties: the first)."""
    answers = [a for a in answers or [] if isinstance(a, dict) and str(a.get("text") or "").strip()]
    if not answers:
        return None
    selected = [a for a in answers if a.get("selected")]
    if selected:
        return str(selected[0]["text"])
    return str(max(answers, key=lambda a: float(a.get("pm_score") or 0))["text"])


def iter_h4_rows(source: str | None) -> Iterator[dict]:
    """Rows of the H4 dump: a local file or folder, or the hub (streamed)."""
    if source is None or source == H4_DATASET:
        datasets = require("datasets", "train", "reading the Stack Exchange dump from the hub")
        yield from datasets.load_dataset(H4_DATASET, split="train", streaming=True)
        return
    path = Path(source)
    files = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl", ".json")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise InputError(f"no H4 files (.parquet, .jsonl) at {source}")
    for file in files:
        yield from _iter_file(file)


def _iter_file(file: Path) -> Iterator[dict]:
    if file.suffix == ".parquet":
        parquet = require("pyarrow.parquet", "eval", "reading parquet files")
        for batch in parquet.ParquetFile(file).iter_batches(batch_size=256):
            yield from batch.to_pylist()
        return
    with open_text(file) as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield parse_json(line, f"{file}:{number}")  # deep nesting too is an error naming the line


def sample_h4(rows: Iterable[dict], settings: SamplingSettings, reasoning: dict[str, str] | None = None) -> list[Example]:
    """Up to ``per_domain`` questions per domain, each with its positive document.

    ``reasoning`` (V1): the positive is the larger model's text for the question; questions it
    does not cover are skipped. Otherwise (V2) the best answer is the positive.
    """
    if reasoning is not None:
        reasoning = bare_question_keys(reasoning)

    def positive_of(row: dict, query: str) -> str | None:
        return reasoning.get(query.strip()) if reasoning is not None else best_answer(row.get("answers"))

    if settings.sampler == "released":
        return _sample_as_released(rows, settings, positive_of)
    rng = random.Random(settings.seed)
    reservoirs: dict[str, list[Example]] = {}
    seen: dict[str, int] = {}
    for row in rows:
        query = str(row.get("question") or "").strip()
        if not settings.keeps(query):
            continue
        domain = settings.domain(row)
        if not settings.wanted(domain):
            continue
        positive = positive_of(row, query)
        if not positive:
            continue
        example = Example(query, (positive,), domain, str(row.get("qid", "")))
        count = seen[domain] = seen.get(domain, 0) + 1
        reservoir = reservoirs.setdefault(domain, [])
        if len(reservoir) < settings.per_domain:
            reservoir.append(example)
        else:
            slot = rng.randrange(count)
            if slot < settings.per_domain:
                reservoir[slot] = example
    return [example for domain in sorted(reservoirs) for example in reservoirs[domain]]


def _sample_as_released(rows: Iterable[dict], settings: SamplingSettings, positive_of) -> list[Example]:
    """sample_stackexchange.py then build_dataset.py: every non-empty question of the target
    domains collected (domains in first-seen order), ``random.seed(seed)`` then each domain's list
    shuffled and cut to ``per_domain``; the length and ``.png`` filters come after sampling, and a
    question without a positive document is dropped last (the released raw data pair each sampled
    question with one)."""
    by_domain: dict[str, list[tuple[str, str, str | None]]] = {}
    for row in rows:
        question = row.get("question")
        if not question:
            continue
        domain = settings.domain(row)
        if settings.wanted(domain):
            query = str(question)
            by_domain.setdefault(domain, []).append((query, str(row.get("qid", "")), positive_of(row, query)))
    rng = random.Random(settings.seed)  # the released global random.seed + random.shuffle, in order
    examples = []
    for domain, questions in by_domain.items():
        rng.shuffle(questions)
        for query, qid, positive in questions[: settings.per_domain]:
            if settings.keeps(query) and positive:
                examples.append(Example(query, (positive,), domain, qid))
    return examples


RELEASED_QUESTION_PREFIX = TRAINING_USER_TEMPLATE.split("{question}")[0]


def bare_question_keys(reasoning: dict[str, str]) -> dict[str, str]:
    """Reasoning files keyed by the released sampler's text ("Instructions: ... Question: <q>", as
    the released raw data are) or by the bare question: both looked up by the bare question."""
    return {key.removeprefix(RELEASED_QUESTION_PREFIX).strip(): text for key, text in reasoning.items()}


def read_user_jsonl(path: str | Path, max_query_chars: int | None = None) -> list[Example]:
    """``{"query": ..., "positives": [...]}`` per line (also ``"positive": "..."``). Queries longer
    than ``max_query_chars`` are left out, as the released sampler leaves them out, and counted in
    a warning; a line that is not such an object is an error naming it."""
    examples, too_long = [], 0
    with open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            row = parse_json(line, f"{path}:{number}")
            if not isinstance(row, dict):
                raise InputError(f"{path}:{number}: a line must be a JSON object, got {type(row).__name__}")
            positives = row.get("positives", [row["positive"]] if "positive" in row else None)
            query = row.get("query")
            if not isinstance(query, str) or not query.strip():
                raise InputError(f"{path}:{number}: 'query' must be a non-empty string")
            if not isinstance(positives, list) or not positives or not all(isinstance(p, str) and p.strip() for p in positives):
                raise InputError(f"{path}:{number}: 'positives' must be a non-empty list of non-empty strings")
            if max_query_chars is not None and len(query) > max_query_chars:
                too_long += 1
                continue
            examples.append(Example(query, tuple(positives), str(row.get("domain", "")), str(row.get("id", number))))
    if too_long:
        logger.warning("%s: %d queries longer than %d characters left out (--max-query-chars)", path, too_long,
                       max_query_chars)
    if not examples:
        raise InputError(f"{path} holds no examples" + (f" of at most {max_query_chars} characters" if too_long else ""))
    return examples


# Prompt families for training data: the released builder's (default), or the evaluation prompt.
TRAINING_PROMPTS = {"released": ("tsqr-train-released", "tsqr-think-train-released"),
                    "eval": (DEFAULT_PROMPT_ID, "tsqr-think-v1")}


def to_records(examples: Iterable[Example], think: bool = False, prompt_family: str = "released") -> list[dict[str, Any]]:
    if prompt_family not in TRAINING_PROMPTS:
        raise InputError(f"unknown training prompt {prompt_family!r}; choose one of {sorted(TRAINING_PROMPTS)}")
    prompt = get_prompt(TRAINING_PROMPTS[prompt_family][think])
    return [{"prompt": prompt.messages(e.query), "query": e.query, "positives": list(e.positives),
             "think": think, "domain": e.domain, "qid": e.qid} for e in examples]


def write_parquet(records: list[dict[str, Any]], path: str | Path) -> Path:
    pyarrow = require("pyarrow", "eval", "writing the training data")
    import pyarrow.parquet as parquet

    if not records:
        raise InputError("no examples left after filtering; loosen --per-domain/--max-query-chars/--domains")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.parquet")
    parquet.write_table(pyarrow.Table.from_pylist(records), partial)
    partial.replace(path)
    return path
