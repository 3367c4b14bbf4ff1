"""Every gateway module imports, and no two gateway modules import each other, even indirectly.

The graph is built from each module's source (:mod:`ast`), with every import in it:
top-level, inside functions, and under ``if TYPE_CHECKING:``, since a cycle that only
works because one side imports late is still two modules that cannot be read apart.
``from package import name`` is an edge to ``package.name`` when that is a module.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections import deque
from pathlib import Path

import pytest

import gateway

ROOT = Path(gateway.__file__).parent

# Cycles that another change removes; each entry must still exist (else delete it here).
# gateway.ratelimit <-> gateway.ratelimit_redis (build_store): the policies work on issue 14 breaks it.
KNOWN_CYCLES: set[frozenset[str]] = set()  # none left: a new one fails the test


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = ["gateway", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph(found: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported gateway module: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in found else source
                           for alias in node.names]
            for target in targets:
                if target in found and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Shortest cycles as [a, b, ..., a]: one through each module not on a cycle already reported."""
    found: list[list[str]] = []
    seen: set[str] = set()
    for start in sorted(graph):
        if start in seen:
            continue
        # breadth-first from start: the shortest way back to it, if any
        parents: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    cycle = [start, *reversed(path[:-1]), start]
                    if not seen & set(cycle):
                        found.append(cycle)
                    seen.update(cycle)
                    queue.clear()
                    break
                if nxt not in parents:
                    parents[nxt] = node
                    queue.append(nxt)
    return found


def shown(cycle: list[str], graph: dict[str, dict[str, int]], found: dict[str, Path]) -> str:
    steps = [f"{a} imports {b} ({found[a].relative_to(ROOT.parent)}:{graph[a][b]})"
             for a, b in zip(cycle, cycle[1:], strict=False)]
    return " -> ".join(cycle) + "\n    " + "\n    ".join(steps)


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_walk_packages_finds_the_same_modules() -> None:
    walked = {info.name for info in pkgutil.walk_packages(gateway.__path__, "gateway.")}
    assert walked | {"gateway"} == set(modules())


def test_no_import_cycle_among_gateway_modules() -> None:
    found = modules()
    graph = import_graph(found)
    present = cycles(graph)
    unknown = [cycle for cycle in present if frozenset(cycle) not in KNOWN_CYCLES]
    assert not unknown, "import cycles:\n  " + "\n  ".join(shown(c, graph, found) for c in unknown)
    gone = KNOWN_CYCLES - {frozenset(cycle) for cycle in present}
    assert not gone, f"no longer a cycle, remove from KNOWN_CYCLES: {sorted(sorted(c) for c in gone)}"


@pytest.mark.parametrize(("sources", "expected"), [
    ({"a": "from . import b", "b": ""}, []),
    ({"a": "from . import b", "b": "from . import a"}, [["gateway.a", "gateway.b", "gateway.a"]]),
    ({"a": "def f():\n    from .b import x", "b": "from .a import y"}, [["gateway.a", "gateway.b", "gateway.a"]]),
    ({"a": "if TYPE_CHECKING:\n    from gateway.b import T", "b": "import gateway.c", "c": "from gateway import a"},
     [["gateway.a", "gateway.b", "gateway.c", "gateway.a"]]),
    ({"a": "from .sub import m", "sub/__init__": "", "sub/m": "from ..a import z"},
     [["gateway.a", "gateway.sub.m", "gateway.a"]]),
])
def test_cycles_are_found_through_every_kind_of_import(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: dict[str, str], expected: list[list[str]]) -> None:
    for name, text in sources.items():
        path = tmp_path / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    (tmp_path / "__init__.py").write_text("")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert cycles(import_graph(modules())) == expected
