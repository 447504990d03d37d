"""The package layout of docs/architecture.md: no import cycle between modules, the
subpackages depend on each other in one direction only, nothing imports the examples,
and the LAMMPS entry point stays free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "nnmd_lammps"

#: What each part may import (besides itself and the top-level modules errors, units,
#: limits and the package __init__).
ALLOWED = {
    "descriptors": set(),
    "model": {"descriptors"},
    "data": {"descriptors"},
    "training": {"descriptors", "model", "data"},
    "interop": {"descriptors", "model", "data"},
    "active": {"descriptors", "model", "data", "training", "interop"},
    "cli": {"descriptors", "model", "data", "training", "interop", "active", "plugin_path"},
}
BASE = {"errors", "units", "limits", "__init__"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports (anywhere in the file, lazy imports
    included), as dotted names."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("nnmd_lammps"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("nnmd_lammps"):
                target = node.module
            else:
                continue
            out.add(target)
            # `from . import limits` / `from .x import y`: y may itself be a module
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists():
                    out.add(candidate)
    return out


def graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    names = {module_name(f) for f in files}
    return {
        module_name(f): {m for m in imports_of(f) if m in names} - {module_name(f)} for f in files
    }


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycle_between_modules():
    g = graph()
    # a package's __init__ re-exports its submodules; edges into an __init__ from its
    # own submodules would be the cycle to catch, so keep every edge
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1 and not m.startswith(n + "."):
                cycle = [*stack[stack.index(n) :], n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert len(g) > 30  # the walk saw the whole package


def test_parts_depend_in_one_direction():
    for m, deps in graph().items():
        p = part(m)
        if p not in ALLOWED:
            continue
        for d in deps:
            q = part(d)
            assert q == p or q in BASE or q in ALLOWED[p], f"{m} imports {d}"


def test_nothing_imports_the_examples():
    for f in PACKAGE.rglob("*.py"):
        text = f.read_text()
        assert "examples" not in {n.split(".")[0] for n in _absolute_imports(text)}, f


def _absolute_imports(text: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module)
    return out


def test_entry_point_and_interop_package_import_no_torch():
    code = (
        "import sys, nnmd_lammps, nnmd_lammps.plugin_path, nnmd_lammps.interop; "
        "assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
