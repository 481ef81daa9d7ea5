"""Imports only go down (docs/architecture in the README): the packages form layers, and
no module imports another in a circle, deferred imports inside functions included (a
deferred import hides a circle, it does not remove it)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# lower layers first; a package may import its own layer's modules and any layer below
LAYERS: list[set[str]] = [
    {"common"},
    {"monitoring"},
    {"api", "consumers", "warehouse"},
    {"flows"},
    {"inferstream"},
]
PACKAGES = {p for layer in LAYERS for p in layer}


def _layer(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Every project module and the project modules it imports, anywhere in its body."""
    modules = {_module_name(root, p): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` imports pkg.mod when that is a module
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t.split(".")[0] in PACKAGES:
                    while t and t not in modules:
                        t = t.rpartition(".")[0]
                    if t and t != name:
                        found.add(t)
        graph[name] = found
    return graph


def _upward(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for mod, deps in graph.items():
        own = mod.split(".")[0]
        for dep in deps:
            other = dep.split(".")[0]
            if _layer(other) > _layer(own) or (_layer(other) == _layer(own) and other != own):
                out.append(f"{mod} -> {dep}")
    return sorted(out)


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    # a package's __init__ importing its own modules is not a circle worth reporting
    edges = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    cycles: list[str] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d) :], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return cycles


def test_no_package_imports_a_layer_above_it_or_beside_it():
    upward = _upward(_imports())
    assert not upward, "imports going up or sideways:\n" + "\n".join(upward)


def test_no_import_circles():
    cycles = _cycles(_imports())
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    (tmp_path / "common" / "a.py").write_text("from common import b\n")
    (tmp_path / "common" / "b.py").write_text("def f():\n    from common import a\n")  # deferred
    (tmp_path / "consumers" / "x.py").write_text("import flows.y\n")
    (tmp_path / "flows" / "y.py").write_text("")
    graph = _imports(tmp_path)
    assert graph["common.a"] == {"common.b"} and graph["common.b"] == {"common.a"}
    assert _cycles(graph) == ["common.a -> common.b -> common.a"]
    assert _upward(graph) == ["consumers.x -> flows.y"]


# in the dev extra for bench/table_format.py only: the product must run without them
BENCH_ONLY = {"pyiceberg"}


def _bench_only_imports(root: Path = ROOT) -> list[str]:
    found = []
    for pkg in sorted(PACKAGES):
        for path in sorted((root / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                mod = _module_name(root, path)
                found += [f"{mod} -> {n}" for n in names if n.split(".")[0] in BENCH_ONLY]
    return found


def test_no_package_imports_a_bench_only_dependency():
    found = _bench_only_imports()
    assert not found, "bench-only dependencies imported by the product:\n" + "\n".join(found)


def test_the_bench_only_check_sees_a_deferred_import(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    (tmp_path / "common" / "a.py").write_text("def f():\n    from pyiceberg.catalog.sql import SqlCatalog\n")
    assert _bench_only_imports(tmp_path) == ["common.a -> pyiceberg.catalog.sql"]
