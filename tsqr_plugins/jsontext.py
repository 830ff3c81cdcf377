"""Reading JSON that tsqr may write back: only what ``json.dumps`` can say again with the same
meaning (RFC 8259). Python's parser accepts more: UTF-16 bodies, NaN and Infinity, numbers past
the largest float (``1e400`` becomes ``inf``, written back as ``Infinity``), and duplicate keys (the
last one wins, where Elasticsearch refuses the document). The service answers 400 to such a body;
the proxy sends it to the engine as it came."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_INT_DIGITS = 18  # no field takes more; Python would spend time on thousands of digits


class JSONValueError(ValueError):
    """A JSON text this module refuses to read, with the reason."""


def loads_exactly(raw: bytes | str) -> Any:
    """``raw`` parsed, or JSONValueError (json.JSONDecodeError for malformed text, RecursionError
    for nesting past the parser)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise JSONValueError(f"not UTF-8 ({error.reason} at byte {error.start})") from None
    return json.loads(raw, parse_constant=_no_constants, parse_int=_bounded_int, parse_float=_finite_float,
                      object_pairs_hook=_unique_keys)


def _no_constants(name: str):
    raise JSONValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JSONValueError(f"{text[:40]} is past the largest JSON number")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JSONValueError(f"an integer of {digits} digits")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise JSONValueError(f"the key {repeated[:40]!r} appears twice in one object")
    return document
