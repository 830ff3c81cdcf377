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
    """One backend answer: the raw completion text, or the error that prevented it."""

    text: str | None = None
    error: Exception | None = None
    cached: bool = False
    finish_reason: str | None = None  # "length" when cut at max_tokens (OpenAI's names); None: unknown

    @classmethod
    def failed(cls, error: Exception) -> Completion:
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

    Subclasses set ``NAME``, ``EXTRA`` (the pip extra providing ``REQUIRES``) and implement
    ``generate``. A missing dependency fails in ``__init__`` with the extra to install, never at
    import. ``generate`` returns one Completion per query, in order; an item that failed carries
    its error so that one bad item does not sink the batch.
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
        """What a rewrite cache file is bound to: rewrites of other backends, models or weights never mix."""
        identity = {"backend": self.NAME, "model": self.model_id}
        return {**identity, "weights": self.weights} if self.weights else identity

    @classmethod
    def is_available(cls) -> bool:
        return all(is_installed(module) for module in cls.REQUIRES)

    @classmethod
    def install_hint(cls) -> str:
        return install_hint(cls.EXTRA) if cls.EXTRA else "included in the base install"

    @abstractmethod
    def generate(self, queries: Sequence[str], prompt: Prompt, params: GenerationParams) -> list[Completion]:
        ...

    def chat(self, conversations: Sequence[list[dict[str, str]]], params: GenerationParams) -> list[Completion]:
        """Completions for arbitrary chat conversations (the service's OpenAI-compatible endpoint)."""
        raise NotImplementedError(f"the {self.NAME} backend cannot answer arbitrary chat conversations")

    def close(self) -> None:
        """Release resources (HTTP sessions, GPU memory)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string (backends that do not stop on strings themselves)."""
    cut = len(text)
    for marker in stop:
        position = text.find(marker)
        if position != -1:
            cut = min(cut, position)
    return text[:cut]
