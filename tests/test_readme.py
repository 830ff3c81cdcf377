"""The Python blocks of the README, of every docs/*.md page and of integrations/llamaindex/README.md run as written. A block whose first line is `# needs: ...` (a hub
model, a live engine or server) is compiled and its imports resolved (skipped, saying so, where it
names "the <extra> extra" and that extra is not installed); every other block runs in a fresh
interpreter outside the clone."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tsqr_plugins.extras import EXTRAS
from tsqr_plugins.lazy import is_installed

DOCUMENTS = ("README.md", "integrations/llamaindex/README.md",
             *sorted(path.relative_to(REPO).as_posix() for path in (REPO / "docs").glob("*.md")))
FOUND = [(name, block) for name in DOCUMENTS
         for block in re.findall(r"^```python\n(.*?)^```", (REPO / name).read_text(encoding="utf-8"), re.S | re.M)]
BLOCKS = [block for _, block in FOUND]


def test_the_readme_has_blocks_that_run():
    assert sum(not block.startswith("# needs:") for block in BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{name}-{i + 1}" for i, (name, _) in enumerate(FOUND)])
def test_readme_block(block, tmp_path):
    tree = ast.parse(block)  # a syntax error fails here, whatever the block needs
    needed = re.match(r"# needs:.*?\bthe (\w+) extra", block)
    if needed and needed.group(1) in EXTRAS and not all(is_installed(m) for m, _ in EXTRAS[needed.group(1)]):
        pytest.skip(f"the block needs the {needed.group(1)} extra, which is not installed here")
    for node in ast.walk(tree):  # every name it imports exists
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                    f"{node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
    if block.startswith("# needs:"):
        return
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
