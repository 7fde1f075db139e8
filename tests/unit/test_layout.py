"""The tree is the flow: the layering rule, who may import faust and argparse, module and function size.

schemas ← {gateway, model} ← ops ← consumers ← cli (README, "Architecture"); gateway and model never
import each other; bench/ and tests/ sit outside the graph (nothing imports them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

ALLOWED = {
    "schemas": set(),
    "gateway": {"schemas"},
    "model": {"schemas"},
    "ops": {"schemas", "model"},
    "consumers": {"schemas", "gateway", "model", "ops"},
    "cli": {"schemas", "gateway", "model", "ops", "consumers"},
}
OUTSIDE = {"bench", "tests"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_DOCSTRING_LINES = 6


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package: str) -> None:
    for path in _modules(package):
        ours = _imports(path) & (set(ALLOWED) | OUTSIDE)
        bad = ours - ALLOWED[package] - {package}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


@pytest.mark.parametrize(("library", "owner"), [("faust", "consumers"), ("argparse", "cli")])
def test_only_one_package_imports(library: str, owner: str) -> None:
    for package in set(ALLOWED) - {owner}:
        for path in _modules(package):
            assert library not in _imports(path), f"{path.relative_to(REPO)} imports {library}; only {owner}/ may"


def test_consumers_is_the_streaming_shell_only() -> None:
    modules = [p for p in _modules("consumers") if p.name != "__init__.py"]
    assert len(modules) <= 8, [p.name for p in modules]


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_modules_and_functions_stay_small(package: str) -> None:
    problems = []
    for path in _modules(package):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        where = path.relative_to(REPO)
        if len(lines) > MAX_MODULE_LINES:
            problems.append(f"{where}: {len(lines)} lines")
        if path.stem in {"utils", "helpers", "manager", "misc"}:
            problems.append(f"{where}: name says nothing")
        for fn in _functions(ast.parse(text)):
            length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            first = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
            # A long function says why in a comment right above it.
            if length > MAX_FUNCTION_LINES and not lines[first - 2].lstrip().startswith("#"):
                problems.append(f"{where}:{fn.lineno} {fn.name} is {length} lines without a comment saying why")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_module_docstrings_are_short(package: str) -> None:
    problems = []
    for path in _modules(package):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False)
        where = path.relative_to(REPO)
        if not doc:
            if path.name != "__init__.py":
                problems.append(f"{where}: no module docstring")
        elif len(doc.strip().splitlines()) > MAX_DOCSTRING_LINES:
            problems.append(f"{where}: module docstring of {len(doc.strip().splitlines())} lines (README for more)")
    assert not problems, "\n".join(problems)
