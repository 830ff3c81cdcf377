"""Settings declared once: a dataclass field carries its help, and a command's flags are derived
from the fields (as vLLM's ``FrontendArgs.add_cli_args`` and TRL's ``TrlParser`` derive theirs).

    @dataclass
    class ServiceConfig:
        port: int = setting(8000, help="port")

    add_arguments(parser, ServiceConfig)   # --port, with "(default 8000)" in its help

Flags default to None, so that a YAML file or the dataclass default applies when a flag is not
given (``ServiceConfig.load`` drops None values).

A renamed setting keeps its old name for one release: ``setting(..., aliases=("engine",))`` makes
``--engine`` a hidden flag and ``engine`` a settings-file key that still work, with a warning that
names the new spelling (``add_renamed`` does the same for a hand-written flag, ``renamed_keyword``
for a keyword argument).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
import warnings
from typing import Any

from tsqr_plugins.errors import InputError

MISSING = dataclasses.MISSING
logger = logging.getLogger(__name__)


def setting(default: Any = MISSING, *, help: str, default_factory: Any = MISSING,  # noqa: A002 - argparse's word
            choices: tuple[str, ...] | None = None, default_text: str | None = None,
            aliases: tuple[str, ...] = ()) -> Any:
    """A dataclass field with what its flag needs: ``help``, ``choices``, and ``default_text`` when
    the default is decided later (e.g. per rewriter); ``aliases`` are its old names, kept for one
    release."""
    metadata = {"help": help, "choices": choices, "default_text": default_text, "aliases": aliases}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of ``cls`` that has a help text: ``--field-name``; a ``bool`` is a switch,
    a ``list[str]`` a repeatable flag, ``int``/``float`` are parsed as such. A field's old names
    are hidden flags that warn (``add_renamed``)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        help_text = field.metadata.get("help")
        if help_text is None:
            continue
        flag = flag_name(field.name)
        default = field.metadata.get("default_text")
        if default is None and field.default not in (MISSING, None, False):
            default = str(field.default)
        text = f"{help_text} (default {default})" if default else help_text
        kind = hints[field.name]
        base = next((arg for arg in typing.get_args(kind) if arg is not type(None)), kind)
        if kind is bool:
            options: dict[str, Any] = {"action": "store_true", "default": None, "help": text}
        elif typing.get_origin(kind) is list:
            options = {"action": "append", "help": text + " (repeatable)"}
        else:
            options = {"type": base if base in (int, float) else str, "choices": field.metadata.get("choices"),
                       "help": text}
        add_renamed(parser, flag, *(flag_name(name) for name in field.metadata.get("aliases", ())), **options)


class OldSpelling(argparse.Action):
    """A flag's old spelling, kept for one release: a warning on stderr naming the new flag, then
    exactly what the new flag does (its own action, type and choices). Hidden from ``--help``."""

    def __init__(self, option_strings: list[str], dest: str, *, new: argparse.Action, **_: Any) -> None:
        super().__init__(option_strings, dest, nargs=new.nargs, const=new.const, default=argparse.SUPPRESS,
                         type=new.type, choices=new.choices, metavar=new.metavar, help=argparse.SUPPRESS)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"tsqr: warning: {option_string} is deprecated, use {self.new.option_strings[0]} "
              "(the old spelling goes in the next release)", file=sys.stderr)
        self.new(parser, namespace, values, option_string)


def add_renamed(parser: Any, flag: str, *old: str, **options: Any) -> argparse.Action:
    """``parser.add_argument(flag, **options)`` and its ``old`` spellings (``OldSpelling``). Both
    spellings at once is an error; a required flag is satisfied by either."""
    if not old:
        return parser.add_argument(flag, **options)
    group = parser.add_mutually_exclusive_group(required=options.pop("required", False))
    new = group.add_argument(flag, **options)
    for spelling in old:
        group.add_argument(spelling, action=OldSpelling, dest=new.dest, new=new)
    return new


def current_names(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """``values`` (a settings file's, keys with underscores) with each old name of a field of
    ``cls`` replaced by the field's name, and a warning naming it."""
    renamed = dict(values)
    for field in dataclasses.fields(cls):
        for old in field.metadata.get("aliases", ()):
            if old not in renamed:
                continue
            if field.name in renamed:
                raise InputError(f"{source}: {old!r} is the old name of {field.name!r}; give only {field.name!r}")
            logger.warning("%s: %r is deprecated, use %r (the old name goes in the next release)",
                           source, old, field.name)
            renamed[field.name] = renamed.pop(old)
    return renamed


def renamed_keyword(where: str, new: str, value: Any, old: str, old_value: Any, stacklevel: int = 3) -> Any:
    """The value of keyword ``new``, or of its old name ``old`` (kept for one release: a
    DeprecationWarning naming ``new``); both, disagreeing, is an error."""
    if old_value is None:
        return value
    warnings.warn(f"{where}({old}=...) is deprecated, use {new}=... (the old name goes in the next release)",
                  DeprecationWarning, stacklevel=stacklevel)
    if value is not None and value != old_value:
        raise InputError(f"{where}: {new}={value!r} and its old name {old}={old_value!r} disagree; give only {new}")
    return old_value
