"""Settings declared once: a dataclass field carries its help, and a command's flags are derived
from the fields (as vLLM's ``FrontendArgs.add_cli_args`` and TRL's ``TrlParser`` derive theirs).

    @dataclass
    class ServiceConfig:
        port: int = setting(8000, help="port")

    add_arguments(parser, ServiceConfig)   # --port, with "(default 8000)" in its help

Flags default to None, so that a YAML file or the dataclass default applies when a flag is not
given (``ServiceConfig.load`` drops None values).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

MISSING = dataclasses.MISSING


def setting(default: Any = MISSING, *, help: str, default_factory: Any = MISSING,  # noqa: A002 - argparse's word
            choices: tuple[str, ...] | None = None, default_text: str | None = None) -> Any:
    """A dataclass field with what its flag needs: ``help``, ``choices``, and ``default_text`` when
    the default is decided later (e.g. per engine)."""
    metadata = {"help": help, "choices": choices, "default_text": default_text}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of ``cls`` that has a help text: ``--field-name``; a ``bool`` is a switch,
    a ``list[str]`` a repeatable flag, ``int``/``float`` are parsed as such."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        help_text = field.metadata.get("help")
        if help_text is None:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.metadata.get("default_text")
        if default is None and field.default not in (MISSING, None, False):
            default = str(field.default)
        text = f"{help_text} (default {default})" if default else help_text
        kind = hints[field.name]
        base = next((arg for arg in typing.get_args(kind) if arg is not type(None)), kind)
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=None, help=text)
        elif typing.get_origin(kind) is list:
            parser.add_argument(flag, action="append", help=text + " (repeatable)")
        else:
            parser.add_argument(flag, type=base if base in (int, float) else str, choices=field.metadata.get("choices"),
                                help=text)
