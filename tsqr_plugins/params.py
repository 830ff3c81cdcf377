"""Sampling parameters and the named presets (``paper``, ``greedy``)."""

from __future__ import annotations

import dataclasses
import math
import json
from dataclasses import dataclass
from typing import Any

from tsqr_plugins.errors import InputError

QWEN_STOP = ("<|im_end|>", "<|endoftext|>")


@dataclass(frozen=True)
class GenerationParams:
    """How a backend samples a rewrite. Defaults are the paper's (released evaluation code), the
    ``paper`` preset.

    Args:
        temperature: Sampling temperature, >= 0; 0 means greedy decoding.
        top_p: Nucleus sampling mass, in (0, 1].
        top_k: Sample from the k likeliest tokens; None disables top-k.
        repetition_penalty: > 0; 1 is none (the paper's 1.05 discourages repeats).
        max_tokens: Most tokens of one completion.
        stop: Strings (Qwen's end tokens by default) that end a completion; one string or a list
            is taken as a tuple.
        seed: Sampling seed, for repeatable rewrites; None: unseeded.

    Raises:
        InputError: A value of the wrong type or out of range.
    """

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int | None = 20
    repetition_penalty: float = 1.05
    max_tokens: int = 500
    stop: tuple[str, ...] = QWEN_STOP
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, (list, str)):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        problems = []
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"invalid generation parameters: {name} must be a finite number, got {value!r}")
        for name in ("top_k", "max_tokens", "seed"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InputError(f"invalid generation parameters: {name} must be an integer, got {value!r}")
        if not isinstance(self.stop, tuple) or not all(isinstance(stop, str) for stop in self.stop):
            raise InputError(f"invalid generation parameters: stop must be strings, got {self.stop!r}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            problems.append(f"top_k must be >= 1 or None (disabled), got {self.top_k}")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_tokens < 1:
            problems.append(f"max_tokens must be >= 1, got {self.max_tokens}")
        if problems:
            raise InputError("invalid generation parameters: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        """Whether decoding is greedy (``temperature == 0``)."""
        return self.temperature == 0

    @classmethod
    def preset(cls, name: str = "paper", **overrides: Any) -> GenerationParams:
        """A named preset with some fields overridden.

        Args:
            name: A preset in ``PRESETS``: ``"paper"`` or ``"greedy"``.
            **overrides: Fields to change; a None value is ignored (so unset CLI flags pass through).

        Raises:
            InputError: An unknown preset or field.
        """
        if name not in PRESETS:
            raise InputError(f"unknown sampling preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name].replace(**{k: v for k, v in overrides.items() if v is not None})

    def replace(self, **overrides: Any) -> GenerationParams:
        """A copy with some fields changed (checked like a new instance).

        Args:
            **overrides: Fields to change.

        Raises:
            InputError: An unknown field, or a value out of range.
        """
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InputError(f"unknown generation parameters {sorted(unknown)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``stop`` as a list)."""
        data = dataclasses.asdict(self)
        data["stop"] = list(self.stop)
        return data

    def key(self) -> str:
        """Canonical JSON, used in cache keys."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


PRESETS: dict[str, GenerationParams] = {
    "paper": GenerationParams(),
    # Deterministic decoding for reproducible evaluation; the repetition penalty stays the paper's.
    "greedy": GenerationParams(temperature=0.0, top_p=1.0, top_k=None),
}
