"""Reciprocal rank fusion of each search of an ``msearch()`` call (``fusion="rrf"``): every search
that was rewritten and can be fused faithfully becomes several items of the one ``_msearch`` sent
(its original body, then the rewritten one; with ``samples=n`` one per sample that rewrote it, as
``search()`` sends them, see ``fusedsearch.py``); every other search is one item, as the stage
without fusion sends it (several samples joined). Pure: the I/O is in ``searchclient.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import fusedsearch
from .fusedsearch import Split


@dataclass
class Slot:
    """Where one of the caller's searches is in the ``_msearch`` sent: the item of its answer (the
    original's, when fused: the rewrites' are the next ones) and, when fused, its page and which
    sample each rewrite is; else why not."""

    item: int
    target: Split | None
    rewritten: list[Split]
    reason: str | None
    samples: list[int] = field(default_factory=list)

    @property
    def items(self) -> int:
        """How many items of the ``_msearch`` are this search's."""
        return 1 + len(self.rewritten) if self.target is not None else 1


def items_key(kwargs: dict) -> str:
    """The keyword holding the searches: ``searches`` (elasticsearch-py 8+) or ``body``."""
    return "searches" if isinstance(kwargs.get("searches"), list) else "body"


NDJSON_TEXT = "an item given as NDJSON text (sent as written, not rewritten)"


def split_item(header: Any, body: Any) -> tuple[Split | None, str | None]:
    """One ``_msearch`` item as a fusable search, or None and why not."""
    if not isinstance(header, dict) or not isinstance(body, dict):
        return None, NDJSON_TEXT
    # an item's header holds only fields an _msearch header takes; split() places them back there
    return fusedsearch.split({**header, "body": body})


def plan(original: dict, rewritten: dict, infos: list[dict],
         samples: Sequence[tuple[dict, list[dict]]] | None = None) -> tuple[dict, list[Slot]]:
    """The keyword arguments of the ``_msearch`` to send and each search's slot in it.

    Args:
        original: The caller's ``msearch`` keyword arguments.
        rewritten: The same with the rewritten bodies (the stage without fusion would send these;
            with several samples, each text query's samples joined).
        infos: The stage's metadata of each search (``rewritten`` > 0: a rewrite is in its body).
        samples: With several samples, each sample's own ``(rewritten, infos)``: a fused search's
            rewritten items are those of the samples that rewrote it, in sample order. None: the
            one rewrite is ``rewritten``.
    """
    key = items_key(original)
    each = [(rewritten, infos)] if samples is None else list(samples)
    items: list = []
    slots = []
    for number, info in enumerate(infos):
        header, body = original[key][2 * number], original[key][2 * number + 1]
        target, seconds, which = None, [], []
        if not info.get("rewritten"):
            reason = (NDJSON_TEXT if isinstance(header, str) or isinstance(body, str)  # not read: sent as written
                      else fusedsearch.NOTHING_REWRITTEN if info.get("queries") or info.get("fallback")
                      else "no text query to rewrite")
        else:
            target, reason = split_item(header, body)
            for sample, (call, sample_infos) in enumerate(each if target is not None else []):
                if not sample_infos[number].get("rewritten"):
                    continue  # this sample fell back: its search would be the original's
                second, reason = split_item(call[key][2 * number], call[key][2 * number + 1])
                if second is None:
                    break
                seconds.append((call[key][2 * number], second))
                which.append(sample)
        if target is not None and seconds and reason is None:
            slots.append(Slot(len(items) // 2, target, [second for _, second in seconds], None, which))
            bodies = fusedsearch.item_bodies(target, [second for _, second in seconds])
            items += [header, bodies[0]]
            for (new_header, _), new_body in zip(seconds, bodies[1:]):
                items += [new_header, new_body]
        else:
            slots.append(Slot(len(items) // 2, None, [], reason or fusedsearch.NOTHING_REWRITTEN))
            items += [rewritten[key][2 * number], rewritten[key][2 * number + 1]]
    return {**rewritten, key: items}, slots
