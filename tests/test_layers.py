"""The import graph runs one way: theory (boundcheck, outside its command layer boundcheck/cli/) imports
nothing from the studies (empirical), and the shared file conventions (empirical/io.py) import nothing
above them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_theory_imports_nothing_from_the_studies():
    command_layer = ROOT / "boundcheck" / "cli"
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] == "empirical")
        for p in (ROOT / "boundcheck").rglob("*.py") if command_layer not in p.parents
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_io_imports_nothing_above_it():
    above = sorted(m for m in _imports(ROOT / "empirical" / "io.py") if m.split(".")[0] == "empirical")
    assert above == []


def test_cliargs_builds_on_io_not_the_reverse():
    assert "empirical.io" in _imports(ROOT / "empirical" / "cliargs.py")
