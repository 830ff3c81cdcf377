"""The package's layers, read from its imports (function-level ones included): a subpackage imports
only those below it, so that one piece of logic serves every surface above it. Breaking the order
names the module and the import."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tsqr_plugins"
# What each part may import besides itself. "core" is the top-level modules (the rewriter, prompts,
# query DSL, BM25Q, the cache, HTTP server pieces...) together with backends/, which they use.
ALLOWED = {
    "core": {"core"},
    "search": {"core"},
    "adapters": {"core", "search"},
    "service": {"core"},
    "eval": {"core", "search"},
    "training": {"core", "search", "eval"},
    "testing": {"core", "search", "adapters", "service", "eval", "training"},
    "cli": {"core", "search", "adapters", "service", "eval", "training"},
}


def part_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ALLOWED and parts[1] != "core":
        return parts[1]
    return "core"


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module) of every tsqr_plugins import in a file of the package at ``root``."""
    package = ["tsqr_plugins", *path.relative_to(root).parts[:-1]]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.startswith("tsqr_plugins")]
    return found


def test_no_part_imports_one_above_it():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = part_of(".".join(["tsqr_plugins", *path.relative_to(PACKAGE).with_suffix("").parts]))
        for line, module in imports(path):
            target = part_of(module)
            if target != own and target not in ALLOWED[own]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({own}) imports {module} ({target})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path):
    """What the test above reads: a relative import resolved to its module, and its part."""
    fake = tmp_path / "tsqr_plugins" / "search"
    fake.mkdir(parents=True)
    (fake / "x.py").write_text("from ..adapters import stage\nfrom . import bm25\n\ndef f():\n    from ..service import app\n")
    found = [module for _, module in imports(fake / "x.py", tmp_path / "tsqr_plugins")]
    assert found == ["tsqr_plugins.adapters", "tsqr_plugins.search.bm25", "tsqr_plugins.service"]
    assert [part_of(module) for module in found] == ["adapters", "search", "service"]
    assert "adapters" not in ALLOWED["search"] and "service" not in ALLOWED["search"]
