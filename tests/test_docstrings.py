"""The public API documents itself: every name ``tsqr_plugins`` exports, every backend, the cache,
the service's settings and every adapter class has a docstring, and every parameter of its
``__init__``, public methods and functions is listed in an ``Args:`` section (``Attributes:`` for
dataclass fields; a ``ServiceConfig`` field's ``setting(help=...)`` counts). A new parameter
without a line of documentation fails here, naming it."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re

import pytest

import tsqr_plugins
from tsqr_plugins.backends import BACKENDS
from tsqr_plugins.errors import MissingDependencyError

ADAPTERS = [
    "tsqr_plugins.adapters.stage:StageSettings",
    "tsqr_plugins.adapters.searchclient:RewritingSearchClient",
    "tsqr_plugins.adapters.searchclient:AsyncRewritingSearchClient",
    "tsqr_plugins.adapters.elasticsearch:RewritingElasticsearch",
    "tsqr_plugins.adapters.elasticsearch:AsyncRewritingElasticsearch",
    "tsqr_plugins.adapters.opensearch:RewritingOpenSearch",
    "tsqr_plugins.adapters.opensearch:AsyncRewritingOpenSearch",
    "tsqr_plugins.adapters.proxy:SearchProxy",
    "tsqr_plugins.adapters.proxy:create_proxy_app",
    "tsqr_plugins.adapters.llamaindex:TongSearchQRQueryTransform",
    "tsqr_plugins.adapters.llamaindex:TongSearchQRRetriever",
    "tsqr_plugins.adapters.pyserini:RewritingSearcher",
    "tsqr_plugins.adapters.pyterrier:TongSearchQRRewrite",
    "tsqr_plugins.adapters.pyterrier:TongSearchQRFusion",
    "tsqr_plugins.search.terrier:TerrierBM25",
]
OTHERS = [
    *BACKENDS.values(),
    "tsqr_plugins.backends.cache:CachedBackend",
    "tsqr_plugins.cache:RewriteCache",
    "tsqr_plugins.service:ServiceConfig",
    "tsqr_plugins.service:create_app",
]
EXPORTED = [name for name in tsqr_plugins.__all__ if inspect.isclass(getattr(tsqr_plugins, name))
            or inspect.isfunction(getattr(tsqr_plugins, name))]
CONSTANTS = sorted(set(tsqr_plugins.__all__) - set(EXPORTED))
SECTION = re.compile(r"(Args|Attributes):\s*$")
ENTRY = re.compile(r" {4}(\*{0,2}\w+)(?: \([^)]*\))?:(?:\s|$)")


def documented(doc: str | None) -> set[str]:
    """The names listed in the ``Args:``/``Attributes:`` sections of a docstring (once cleaned:
    sections at column 0, entries indented four spaces, continuations deeper)."""
    names: set[str] = set()
    inside = False
    for line in inspect.cleandoc(doc or "").splitlines():
        if line.strip() and not line.startswith(" "):
            inside = bool(SECTION.match(line))
        elif inside and (entry := ENTRY.match(line)):
            names.add(entry.group(1))
    return names


def parameters(function) -> list[str]:
    """A function's parameters as a docstring lists them (``*args``, ``**options``), self/cls left out."""
    marks = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    listed = list(inspect.signature(function).parameters.values())
    if listed and listed[0].name in ("self", "cls"):
        listed = listed[1:]
    return [marks.get(p.kind, "") + p.name for p in listed]


def own_classes(cls: type, package: str) -> list[type]:
    return [klass for klass in cls.__mro__ if klass.__module__.startswith(package)]


def problems_of_function(where: str, function, extra: set[str] = frozenset()) -> list[str]:
    doc = inspect.getdoc(function)
    if not doc:
        return [f"{where} has no docstring"]
    missing = [name for name in parameters(function) if name not in documented(doc) | extra]
    return [f"{where}: {name} is not in its Args section" for name in missing]


def problems_of_class(where: str, cls: type, package: str = "tsqr_plugins") -> list[str]:
    """What is undocumented in ``cls``: its docstring, ``__init__``'s parameters and those of the
    public methods that classes of ``package`` define (not those of a host framework's base)."""
    if not (vars(cls).get("__doc__") or "").strip():
        return [f"{where} has no docstring of its own"]
    found = []
    definer = next((klass for klass in cls.__mro__ if "__init__" in vars(klass)), object)
    if definer.__module__.startswith(package):
        # __init__'s arguments may be listed in the class docstring (Google style), in that of the
        # class that defines __init__, or in __init__'s own
        listed = documented(cls.__doc__) | documented(definer.__doc__) | documented(inspect.getdoc(definer.__init__))
        if dataclasses.is_dataclass(cls):
            listed |= {field.name for field in dataclasses.fields(cls) if field.metadata.get("help")}
        found += [f"{where}.__init__: {name} is not in the Args section of {where} or its __init__"
                  for name in parameters(definer.__init__) if name not in listed]
    names = sorted({name for klass in own_classes(cls, package) for name in vars(klass) if not name.startswith("_")})
    for name in names:
        member = inspect.getattr_static(cls, name)
        if isinstance(member, property):
            if not inspect.getdoc(member):
                found.append(f"{where}.{name} (a property) has no docstring")
        elif isinstance(member, (classmethod, staticmethod)) or inspect.isfunction(member):
            found += problems_of_function(f"{where}.{name}", getattr(cls, name))
    return found


def load(target: str):
    module_name, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except MissingDependencyError as error:
        pytest.skip(f"{module_name} cannot be imported without its extra: {error}")


def problems(where: str, obj) -> list[str]:
    return problems_of_class(where, obj) if inspect.isclass(obj) else problems_of_function(where, obj)


@pytest.mark.parametrize("name", EXPORTED)
def test_every_exported_name_is_documented(name):
    found = problems(f"tsqr_plugins.{name}", getattr(tsqr_plugins, name))
    assert not found, "\n".join(found)


@pytest.mark.parametrize("target", ADAPTERS + OTHERS)
def test_every_adapter_backend_and_service_class_is_documented(target):
    found = problems(target, load(target))
    assert not found, "\n".join(found)


def test_the_exported_registries_are_described_in_the_package_docstring():
    assert CONSTANTS == ["BACKENDS", "MODES", "PRESETS", "PROMPTS"]
    assert not [name for name in CONSTANTS if f"``{name}``" not in tsqr_plugins.__doc__]


def test_every_registered_backend_name_is_listed_in_load_backend():
    doc = inspect.getdoc(tsqr_plugins.load_backend)
    assert not [name for name in BACKENDS if f"``{name}``" not in doc]


def test_the_check_sees_an_undocumented_parameter():
    def documented_one(query: str, *, limit: int = 1, **options) -> None:
        """Does nothing.

        Args:
            query: The query.
            **options: Anything.

        Returns:
            Nothing; ``limit`` is named here but not in Args.
        """

    class Stage:
        """A stage.

        Args:
            client: Wrapped.
                rewriter: a continuation line, not an entry.
        """

        def __init__(self, client, rewriter) -> None:
            pass

        def search(self, text) -> None:
            """Searches.

            Args:
                text: What to search.
            """

        def msearch(self, texts) -> None:
            pass

    assert problems_of_function("f", documented_one) == ["f: limit is not in its Args section"]
    assert problems_of_class("Stage", Stage, package=__name__) == [
        "Stage.__init__: rewriter is not in the Args section of Stage or its __init__",
        "Stage.msearch has no docstring",
    ]
    assert problems_of_class("Stage", Stage) == []  # a class of another package: not ours to judge
