"""Reading the text files a user hands tsqr (queries, datasets, rewrites, training rows, configs).

One rule for all of them: UTF-8, with one leading byte order mark (U+FEFF, written by Notepad and
Excel's "CSV UTF-8") dropped; a file whose byte order mark says UTF-16 or UTF-32 is an InputError
naming the file and asking for UTF-8, as is a byte that is not UTF-8 (with its line).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tsqr_plugins.errors import InputError

BOM = "\ufeff"

# UTF-32 LE first: its mark begins with UTF-16 LE's
OTHER_ENCODINGS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


def refuse_other_encodings(path: str | Path, head: bytes) -> None:
    """InputError when ``head`` (the file's first bytes) starts with a UTF-16 or UTF-32 mark."""
    for mark, name in OTHER_ENCODINGS:
        if head.startswith(mark):
            raise InputError(f"{path} is {name} text (it starts with a {name} byte order mark); "
                             "save it as UTF-8")


def not_utf8(path: str | Path, data: bytes, start: int) -> InputError:
    """The error for a file whose byte at ``start`` is not UTF-8, naming its line."""
    line = data[:start].count(b"\n") + 1
    return InputError(f"{path}:{line}: not UTF-8 text (byte {data[start]:#x}); save the file as UTF-8")


def read_text(path: str | Path) -> str:
    """The whole file as text, without a leading byte order mark."""
    data = Path(path).read_bytes()
    refuse_other_encodings(path, data[:4])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise not_utf8(path, data, error.start) from None
    return text.removeprefix(BOM)


@contextmanager
def open_text(path: str | Path, newline: str | None = None) -> Iterator[IO[str]]:
    """The file opened for reading line by line (for files too large to hold), without a leading
    byte order mark; a byte that is not UTF-8 is an InputError naming its line."""
    with open(path, "rb") as raw:
        refuse_other_encodings(path, raw.read(4))
    with open(path, encoding="utf-8-sig", newline=newline) as handle:
        try:
            yield handle
        except UnicodeDecodeError:
            raise first_undecodable_line(path) from None


def first_undecodable_line(path: str | Path) -> InputError:
    """The error for the first line of ``path`` that is not UTF-8 (read again, line by line: a text
    stream's decoding error does not say where in the file it was)."""
    with open(path, "rb") as raw:
        for number, line in enumerate(raw, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return InputError(f"{path}:{number}: not UTF-8 text (byte {line[error.start]:#x}); "
                                  "save the file as UTF-8")
    return InputError(f"{path}: not UTF-8 text; save the file as UTF-8")


def parse_json(text: str, where: str) -> Any:
    """``text`` as JSON, or an InputError naming ``where`` (a file, or file:line): not valid JSON,
    or nested past Python's parser. What the value must be is the caller's to say."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: not valid JSON ({error.msg}, line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply") from None
