"""Code structure: no function or method in invdiff/ spans more than 60 lines (the network definitions in
invdiff/nets/ excepted). A function spans from its ``def`` line to the last line of its body; decorators do not
count."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "invdiff"
EXEMPT = (PACKAGE / "nets",)
MAX_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if not any(p.is_relative_to(e) for e in EXEMPT))


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[int, str, int]]:
    """(line, qualified name, span in lines) of each function or method of ``source`` longer than ``max_lines``,
    nested functions and methods of nested classes included."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                span = child.end_lineno - child.lineno + 1  # lineno is the def line: decorators excluded
                if span > max_lines:
                    found.append((child.lineno, name, span))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_the_scan_covers_the_package_but_the_networks():
    mods = _modules()
    assert PACKAGE / "samplers" / "core.py" in mods and PACKAGE / "bench" / "runner.py" in mods
    assert not any(p.is_relative_to(PACKAGE / "nets") for p in mods)


def test_the_scan_counts_from_def_to_last_line():
    def body(n, indent):
        return "".join(f"{' ' * indent}a{i} = {i}\n" for i in range(n))

    src = ("@decorator\n@another\ndef fits():\n" + body(59, 4)  # 60 lines with its def line: allowed
           + "\nclass C:\n    def short(self):\n        pass\n\n    @property\n    def long(self):\n" + body(60, 8)
           + "\nasync def outer():\n    def inner():\n" + body(60, 8) + "    return inner\n")
    assert [(name, span) for _, name, span in long_functions(src)] == [
        ("C.long", 61), ("outer", 63), ("outer.inner", 61)]


def test_no_function_is_longer_than_60_lines():
    offenders = [f"{p.relative_to(PACKAGE.parent)}:{line} {name} ({span} lines)"
                 for p in _modules() for line, name, span in long_functions(p.read_text())]
    assert not offenders, (f"{len(offenders)} function(s) longer than {MAX_LINES} lines (split them):\n  "
                           + "\n  ".join(offenders))
