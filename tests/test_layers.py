"""The import graph runs one way, down the layers of :data:`LAYERS` (the table is defined here, once).

From the bottom: the theory (``boundcheck`` outside its command layer: rules, bounds, hoeffding, fuzz,
errors, networks), the shared bases of the studies (``empirical`` io, models, runtime, augment,
plotting, data, options), the engine, the LRP-0 oracle, the shared CLI options (``cliargs``), the
studies (audit, experiment, explain, sanity, check-model), the sympy proofs, and on top the command
layer (``boundcheck/cli/``, ``boundcheck/__main__.py``).  Imports inside one layer are free; an import
of a higher layer from a lower one ("upward") is counted, every import statement (module level or
inside a function, absolute or relative) parsed with :mod:`ast`.  At most :data:`MAX_UPWARD` may
remain, each listed in :data:`JUSTIFIED` with the reason it stays.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("boundcheck", "empirical", "proofs")

#: (layer name, module prefixes), bottom first; a module belongs to the layer of its longest prefix
LAYERS = (
    ("theory", ("boundcheck",)),
    ("bases", ("empirical", "empirical.io", "empirical.models", "empirical.runtime", "empirical.augment",
               "empirical.plotting", "empirical.data", "empirical.options")),
    ("engine", ("empirical.engine",)),
    ("oracle", ("empirical.oracle",)),
    ("cliargs", ("empirical.cliargs",)),
    ("studies", ("empirical.audit", "empirical.experiment", "empirical.explain", "empirical.sanity",
                 "empirical.checkmodel")),
    ("proofs", ("proofs",)),
    ("command", ("boundcheck.cli", "boundcheck.__main__")),
)
#: the done-when limit of issue 19
MAX_UPWARD = 3
#: ``"importer -> imported"`` upward imports that stay, with the reason (none at present)
JUSTIFIED: dict[str, str] = {}


def layer_of(module: str) -> int | None:
    """Index in :data:`LAYERS` of ``module`` (longest matching prefix); None outside the project."""
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str, root: Path) -> bool:
    f = root.joinpath(*name.split("."))
    return f.with_suffix(".py").is_file() or (f / "__init__.py").is_file()


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``; ``from P import M`` counts as ``P.M`` when M is a
    module of the project, relative imports are resolved against ``path``'s package."""
    me = _module_name(path, root)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((node.lineno, sub if _is_module(sub, root) else base))
    return sorted(set(found))


@functools.lru_cache(maxsize=None)
def upward_imports(root: Path = ROOT) -> list[str]:
    """``"file:line importer [layer] -> imported [layer]"`` for every import of a higher layer."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            me = _module_name(path, root)
            mine = layer_of(me)
            for line, mod in imported_modules(path, root):
                theirs = layer_of(mod)
                if mine is not None and theirs is not None and theirs > mine:
                    out.append(f"{path.relative_to(root)}:{line} {me} [{LAYERS[mine][0]}] -> {mod} "
                               f"[{LAYERS[theirs][0]}]")
    return out


def _key(entry: str) -> str:
    _, me, _, _, mod, _ = entry.split(" ")
    return f"{me} -> {mod}"


def test_every_module_has_a_layer():
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            assert layer_of(_module_name(path, ROOT)) is not None, path


def test_at_most_three_upward_imports_each_justified():
    up = upward_imports()
    assert len(up) <= MAX_UPWARD, "\n".join(up)
    assert not [e for e in up if _key(e) not in JUSTIFIED], "\n".join(up)


def test_the_theory_imports_nothing_from_empirical():
    theory = [e for e in upward_imports() if "[theory] ->" in e]
    assert theory == []


def test_io_imports_nothing_above_it():
    assert [m for _, m in imported_modules(ROOT / "empirical" / "io.py") if layer_of(m) not in (None, 0, 1)] == []


def test_shared_bases_import_no_study_and_no_command():
    studies = LAYERS.index(next(x for x in LAYERS if x[0] == "studies"))
    bad = [e for e in upward_imports() if "[bases] ->" in e and layer_of(e.split(" -> ")[1].split(" ")[0]) >= studies]
    assert bad == []


@pytest.mark.parametrize("code, expected", [
    ("from empirical.experiment import runner\n", 1),  # theory -> studies
    ("def f():\n    from boundcheck.cli import main\n", 1),  # inside a function
    ("from boundcheck.rules import Rule\nimport math\n", 0),  # downward and outside the project
])
def test_the_counter_sees_an_upward_import(tmp_path, code, expected):
    """The check can fail: a copy of the layout with one planted import is counted."""
    for pkg, files in {"boundcheck": ("__init__.py", "rules.py", "planted.py", "cli/__init__.py"),
                       "empirical": ("__init__.py", "experiment/__init__.py", "experiment/runner.py"),
                       "proofs": ("__init__.py",)}.items():
        for f in files:
            p = tmp_path / pkg / f
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("")
    (tmp_path / "boundcheck" / "planted.py").write_text(code)
    assert len(upward_imports(tmp_path)) == expected
