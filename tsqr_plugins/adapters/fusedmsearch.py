"""Reciprocal rank fusion of each search of an ``msearch()`` call (``fusion="rrf"``): every search
that was rewritten and can be fused faithfully becomes two items of the one ``_msearch`` sent (its
original body and the rewritten one, as ``search()`` sends them, see ``fusedsearch.py``); every
other search is one item, as the stage without fusion sends it. Pure: the I/O is in
``searchclient.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import fusedsearch
from .fusedsearch import Split


@dataclass
class Slot:
    """Where one of the caller's searches is in the ``_msearch`` sent: the item of its answer (the
    original's, when fused: the rewrite's is the next one) and, when fused, its page; else why not."""

    item: int
    target: Split | None
    rewritten: Split | None
    reason: str | None


def items_key(kwargs: dict) -> str:
    """The keyword holding the searches: ``searches`` (elasticsearch-py 8+) or ``body``."""
    return "searches" if isinstance(kwargs.get("searches"), list) else "body"


def split_item(header: Any, body: Any) -> tuple[Split | None, str | None]:
    """One ``_msearch`` item as a fusable search, or None and why not."""
    if not isinstance(header, dict) or not isinstance(body, dict):
        return None, "an item given as NDJSON text"
    # an item's header holds only fields an _msearch header takes; split() places them back there
    return fusedsearch.split({**header, "body": body})


def plan(original: dict, rewritten: dict, infos: list[dict]) -> tuple[dict, list[Slot]]:
    """The keyword arguments of the ``_msearch`` to send and each search's slot in it.

    Args:
        original: The caller's ``msearch`` keyword arguments.
        rewritten: The same with the rewritten bodies (the stage without fusion would send these).
        infos: The stage's metadata of each search (``rewritten`` > 0: a rewrite is in its body).
    """
    key = items_key(original)
    pairs = list(zip(original[key][0::2], original[key][1::2], rewritten[key][0::2], rewritten[key][1::2]))
    items: list = []
    slots = []
    for (header, body, new_header, new_body), info in zip(pairs, infos):
        target = second = None
        if not info.get("rewritten"):
            reason = fusedsearch.NOTHING_REWRITTEN if info.get("queries") or info.get("fallback") \
                else "no text query to rewrite"
        else:
            target, reason = split_item(header, body)
            if target is not None:
                second, reason = split_item(new_header, new_body)
        if target is not None and second is not None:
            slots.append(Slot(len(items) // 2, target, second, None))
            first_body, second_body = fusedsearch.item_bodies(target, second)
            items += [header, first_body, new_header, second_body]
        else:
            slots.append(Slot(len(items) // 2, None, None, reason))
            items += [new_header, new_body]
    return {**rewritten, key: items}, slots
