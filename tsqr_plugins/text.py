"""What counts as text: a Python str may hold lone surrogates (from a JSON "\ud800" escape) that
no UTF-8 writer, model or JSON encoder accepts; inputs holding one are refused where they enter."""

from __future__ import annotations


def is_unicode_text(value: str) -> bool:
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
