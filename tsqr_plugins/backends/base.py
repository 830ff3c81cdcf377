"""The contract every inference backend follows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from tsqr_plugins.errors import BackendError
from tsqr_plugins.lazy import install_hint, is_installed
from tsqr_plugins.params import GenerationParams
from tsqr_plugins.prompts import Prompt
from tsqr_plugins.text import is_unicode_text


@dataclass(frozen=True)
class Completion:
    """One backend answer: the raw completion text, or the error that prevented it.

    Attributes:
        text: The model's completion, unparsed; None when it failed.
        error: Why there is no completion; None when there is one.
        cached: True when it came from the rewrite cache.
        finish_reason: How generation ended, in OpenAI's words (``"stop"``; ``"length"``: cut at
            ``max_tokens``); None when the backend does not say.
    """

    text: str | None = None
    error: Exception | None = None
    cached: bool = False
    finish_reason: str | None = None  # "length" when cut at max_tokens (OpenAI's names); None: unknown

    @classmethod
    def failed(cls, error: Exception) -> Completion:
        """A completion that carries only its ``error``.

        Args:
            error: Why this item has no completion.
        """
        return cls(text=None, error=error)


def cacheable(completion: Completion, prompt: Prompt) -> bool:
    """Whether ``completion`` may go into the rewrite cache: only one that ``prompt`` parses to text
    (what ``core.finish`` makes a rewrite of). A failure stored (an empty completion, no <answer> in
    think mode, a lone surrogate) would be answered from the cache for ever: its query falling back,
    a strict request failing, though the next generation could succeed."""
    if completion.error is not None or completion.text is None:
        return False
    try:
        prompt.parse(completion.text)
    except BackendError:
        return False
    return is_unicode_text(completion.text)  # what is stored (SQLite refuses a surrogate, and the batch with it)


def one_per_query(completions: list[Completion], queries: int, engine: str) -> list[Completion]:
    """A backend's answer, checked to hold one completion per query (BackendError otherwise)."""
    if len(completions) != queries:
        raise BackendError(f"backend {engine} returned {len(completions)} completions for {queries} queries")
    return completions


class Backend(ABC):
    """Turns queries into raw completions for a prompt and sampling parameters.

    Subclasses set ``NAME``, ``EXTRA`` and ``REQUIRES`` and implement ``generate``. A missing
    dependency fails in ``__init__`` with the extra to install, never at import. A backend is a
    context manager: leaving the ``with`` block calls ``close``.

    Attributes:
        NAME: The name it is registered under in ``BACKENDS``.
        EXTRA: The pip extra that installs ``REQUIRES``; None: the base install.
        REQUIRES: Modules it imports when built.
        CACHEABLE: False when its answers are already persistent (``with_cache`` leaves it alone).
        model_id: What produced the rewrites (a model path or hub id, a URL and model name, a file).
        weights: A fingerprint of the model's weights, part of the cache identity when set.
    """

    NAME: ClassVar[str]
    EXTRA: ClassVar[str | None] = None
    REQUIRES: ClassVar[tuple[str, ...]] = ()
    # False for backends whose answers are already persistent (rewrite files).
    CACHEABLE: ClassVar[bool] = True

    model_id: str
    # Which weights model_id names (models.weights_fingerprint); part of the cache identity when set.
    weights: str = ""

    def cache_identity(self) -> dict[str, str]:
        """What a rewrite cache file is bound to (``backend``, ``model``, ``weights`` when set):
        rewrites of other backends, models or weights never mix."""
        identity = {"backend": self.NAME, "model": self.model_id}
        return {**identity, "weights": self.weights} if self.weights else identity

    @classmethod
    def is_available(cls) -> bool:
        """Whether every module in ``REQUIRES`` is installed (nothing is imported)."""
        return all(is_installed(module) for module in cls.REQUIRES)

    @classmethod
    def install_hint(cls) -> str:
        """The pip command that installs ``EXTRA``, or that none is needed."""
        return install_hint(cls.EXTRA) if cls.EXTRA else "included in the base install"

    @abstractmethod
    def generate(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams) -> list[Completion]:
        """One completion per query, in order; an item that failed carries its error, so that one
        bad item does not sink the batch.

        Args:
            queries: The search queries, each put into ``prompt``.
            prompt: The prompt that turns a query into chat messages.
            params: How to sample.
        """

    def generate_samples(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams,
                         n: int) -> list[list[Completion]]:
        """``n`` completions per query (sample ``i`` of a seeded ``params`` with seed + i).

        One ``generate`` call per sample here; engines that sample several completions of one
        prompt at once (OpenAI's and vLLM's ``n``) override this with one call.

        Args:
            queries: The search queries, each put into ``prompt``.
            prompt: The prompt that turns a query into chat messages.
            params: How to sample.
            n: Completions per query, >= 1.

        Returns:
            Per query, its ``n`` completions in sample order.
        """
        per_sample = [self.generate(queries, prompt, sample_params(params, i)) for i in range(n)]
        return [list(samples) for samples in zip(*per_sample)]

    def chat(self, conversations: Sequence[list[dict[str, str]]], params: GenerationParams) -> list[Completion]:
        """Completions for arbitrary chat conversations (the service's OpenAI-compatible endpoint).

        Args:
            conversations: Chat messages (``{"role": ..., "content": ...}`` lists), one per completion.
            params: How to sample.

        Raises:
            NotImplementedError: The backend answers only its own prompts.
        """
        raise NotImplementedError(f"the {self.NAME} backend cannot answer arbitrary chat conversations")

    def close(self) -> None:
        """Release resources (HTTP sessions, GPU memory)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def sample_params(params: GenerationParams, index: int) -> GenerationParams:
    """The parameters of sample ``index`` drawn one at a time: a seeded run gets seed + index (the
    same seed would give the same text again)."""
    return params if params.seed is None or index == 0 else params.replace(seed=params.seed + index)


def sample_key(params: GenerationParams, index: int) -> str:
    """The cache's parameter key of sample ``index``: sample 0 is the single rewrite's entry, so a
    rewrite and the first of several samples are one and the same."""
    return params.key() if index == 0 else f"{params.key()}#sample={index}"


def n_per_query(samples: list[list[Completion]], queries: int, n: int, engine: str) -> list[list[Completion]]:
    """A backend's samples, checked to hold ``n`` completions for each query (BackendError otherwise)."""
    if len(samples) != queries or any(len(row) != n for row in samples):
        raise BackendError(f"backend {engine} returned {[len(row) for row in samples]} samples for {queries} "
                           f"queries, {n} each")
    return samples


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string (backends that do not stop on strings themselves)."""
    cut = len(text)
    for marker in stop:
        position = text.find(marker)
        if position != -1:
            cut = min(cut, position)
    return text[:cut]
