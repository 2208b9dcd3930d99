"""The import graph: every module of the package imports on its own, in a fresh interpreter, and no module
imports one that (directly or through others) imports it back at module level."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import invdiff

ROOT = Path(invdiff.__file__).parent
MODULES = sorted(m.name for m in pkgutil.walk_packages([str(ROOT)], prefix="invdiff."))


def _imports(name: str) -> set[str]:
    """Every invdiff module that ``name`` imports anywhere in its source (top level or inside functions)."""
    path = ROOT.joinpath(*name.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            candidates = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        out |= {c for c in candidates if c in MODULES and c != name}
    return out


def test_no_import_cycles():
    """Lazy imports inside functions count too: a cycle hidden in a function is still a cycle in the design.
    A package's ``__init__`` re-exporting its submodules is not an edge back from those submodules."""
    graph = {m: {d for d in _imports(m) if not (m.startswith(d + ".") and d in MODULES)} for m in MODULES}
    cycles = []

    def visit(node, stack, on_stack, done):
        on_stack.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, stack, on_stack, done)
        stack.pop()
        on_stack.discard(node)
        done.add(node)

    done: set[str] = set()
    for m in MODULES:
        if m not in done:
            visit(m, [], set(), done)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_module_imports_alone():
    code = ("import importlib, sys\nfailed = []\nfor m in sys.argv[1:]:\n"
            "    for k in [k for k in sys.modules if k == 'invdiff' or k.startswith('invdiff.')]:\n"
            "        del sys.modules[k]\n"
            "    try:\n        importlib.import_module(m)\n"
            "    except Exception as e:\n        failed.append(f'{m}: {type(e).__name__}: {e}')\n"
            "print('\\n'.join(failed))\nsys.exit(1 if failed else 0)\n")
    r = subprocess.run([sys.executable, "-c", code, *MODULES], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("module", ["invdiff.operators.base", "invdiff.operators.blur", "invdiff.operators.separable"])
def test_operator_modules_have_no_lazy_back_imports(module):
    assert not any(d.startswith("invdiff.operators") and module in _imports(d) for d in _imports(module))
