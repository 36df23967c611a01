"""The package layering has no import cycles: models never reach for convert, training data never for
a downstream task, ... Checked on the source (every import, also those inside functions and under
``TYPE_CHECKING``), between the sub-packages of mmbert and between the modules of each of them."""

from __future__ import annotations

import ast
from pathlib import Path

import mmbert

ROOT = Path(mmbert.__file__).parent
# Modules whose only job is to re-export or dispatch (the facade and the CLI entry points).
FACADES = {"mmbert", "mmbert.__main__", "mmbert.cli"}


def module_names() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the mmbert modules it imports (``from pkg import submodule`` counts as the submodule)."""
    modules = module_names()

    def resolve(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            graph[name] |= {resolve(t) for t in targets if t.split(".")[0] == "mmbert"} - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for a, targets in import_graph().items():
        for b in targets:
            pa, pb = package_of(a), package_of(b)
            if pa != pb and not {pa, pb} & FACADES:
                packages.setdefault(pa, set()).add(pb)
    assert cycles(packages) == []


def test_no_import_cycle_between_modules():
    # Imports of a package's own __init__ (its facade) from its modules are not edges of the layering.
    graph = {
        a: {b for b in targets if not a.startswith(b + ".")}
        for a, targets in import_graph().items()
        if a not in FACADES
    }
    assert cycles(graph) == []


def test_the_checker_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
