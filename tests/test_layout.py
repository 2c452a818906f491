"""The import graph: no circles, and the package boundaries of the README hold.

Every ``import`` and ``from ... import`` of every module is read with ``ast`` -- at the top of the file and inside
functions alike (a function-level import is an import: it only hides a circle until the function runs).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "envs", "policies", "train", "harness", "benchmarks", "scripts")
ALLOWED: dict[str, set[str]] = {
    "common": {"common"},
    "envs": {"common", "envs"},
    "policies": {"common", "envs", "policies"},
    "train": {"common", "envs", "policies", "train"},
    "harness": {"common", "envs", "policies", "harness"},
    "benchmarks": set(PACKAGES),
    "scripts": {"common", "envs", "policies", "train", "harness", "scripts"},
}
"""Which top-level packages each package may import (benchmarks/ may use everything; nothing imports it)."""
HARNESS_POLICY_MODULES = {"policies.base"}
"""The only policies/ module harness/ may import: the policy protocol and registry."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (``from pkg import sub`` counts as pkg.sub when that is a module)."""
    found: set[str] = set()
    this = module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                package = this.split(".")[: len(this.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*package, base] if base else package)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            arg = node.args[0]
            names = [arg.value] if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else []
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES and n in modules and n != this)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_scan_sees_function_level_imports(graph) -> None:
    assert "harness.workers" in graph["harness.dispatch"], "top-level import"
    assert "policies.openvla.run_format" in graph["policies.checkpoint"], "import inside a method"


def test_no_import_circles(graph) -> None:
    assert _cycles(graph) == [], "modules that import each other (directly or around a loop)"


def test_package_boundaries(graph) -> None:
    bad = []
    for module, targets in graph.items():
        package = module.split(".")[0]
        for target in targets:
            if target.split(".")[0] not in ALLOWED[package]:
                bad.append(f"{module} -> {target}")
            elif package == "harness" and target.startswith("policies.") and target not in HARNESS_POLICY_MODULES:
                bad.append(f"{module} -> {target} (harness/ knows policies only through policies.base)")
    assert bad == []


def test_a_circle_and_a_boundary_break_would_be_caught() -> None:
    """The checks themselves can fail: a made-up graph with a loop and an envs -> harness edge."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "harness" not in ALLOWED["envs"] and "benchmarks" not in ALLOWED["harness"]


def test_every_module_imports(graph) -> None:
    """Every module of the scan is importable as named (the graph is about real modules)."""
    missing = [m for m in graph if importlib.util.find_spec(m) is None]
    assert missing == []
