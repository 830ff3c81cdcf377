"""Import heavy optional libraries where they are used, with errors that name the extra."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from tsqr_plugins.errors import MissingDependencyError

DISTRIBUTION = "tsqr"


def install_hint(extra: str) -> str:
    # tsqr is not on PyPI (a package of that name there would not be this one): install from a clone or a built wheel
    return f"pip install -e '.[{extra}]' in the tsqr clone (or pip install '<path>/{DISTRIBUTION}-<version>-py3-none-any.whl[{extra}]')"


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError saying which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module}', which could not be imported "
            f"({error}). Install it with: {install_hint(extra)}"
        ) from error


def is_installed(module: str) -> bool:
    """True when ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
