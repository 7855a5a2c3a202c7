"""The import graph of `cluster/`, `nodes/` and `logstore/` (issue #20, D190).

Every import counts: module-level, type-only (`if TYPE_CHECKING:`) and in-function ones, because
the cycles this test exists to prevent were all closed by the deferred kinds. The rules:

- arrows between the packages: `nodes → cluster`, `nodes → logstore`, `logstore → cluster`;
  `cluster` imports neither;
- no import cycle among the modules of the three packages;
- no module over `MAX_LINES` lines.

Today's exceptions are listed below by name. The lists may only shrink: an entry that no longer
matches anything fails the test too, so whoever removes a violation also removes its entry.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cluster", "nodes", "logstore")
MAX_LINES = 500

# Which top-level package may import which (besides itself).
ALLOWED_ARROWS = {
    "cluster": set(),
    "logstore": {"cluster"},
    "nodes": {"cluster", "logstore"},
}

# Edges (importer, imported) that close an import cycle today. Removing these from the graph must
# leave it acyclic; each is a debt of issue #20.
CYCLE_EDGES_ALLOWED: set[tuple[str, str]] = set()

# Edges against ALLOWED_ARROWS that exist today.
ARROWS_ALLOWED: set[tuple[str, str]] = set()

# Modules over MAX_LINES lines today.
LONG_MODULES_ALLOWED: set[str] = set()


def modules() -> dict[str, Path]:
    """Every module of the three packages, by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Dotted names this module imports, wherever the import statement stands."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            for alias in node.names:
                yield f"{prefix}.{alias.name}"
            yield prefix


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of the three packages it imports (the longest known prefix)."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for dotted in _imported_names(tree, name, path.name == "__init__.py"):
            if dotted.split(".")[0] not in PACKAGES:
                continue
            parts = dotted.split(".")
            while parts and ".".join(parts) not in mods:
                parts.pop()
            target = ".".join(parts)
            # `from nodes import x` where x is a name, not a module, resolves to the package; an
            # import of a package's __init__ by its own submodules is not an arrow worth counting.
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative; components of more than one module only."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(component)
    return out


def test_the_graph_is_found() -> None:
    graph = import_graph()
    assert "nodes.daemon.node" in graph
    assert any(target.startswith("cluster.") for target in graph["cluster.store"])


def test_a_deferred_import_is_an_edge() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from nodes.config import NodeConfig\n"
        "def f():\n    from cluster import keys\n"
    )
    names = set(_imported_names(ast.parse(source), "logstore.x", False))
    assert "nodes.config.NodeConfig" in names
    assert "cluster.keys" in names


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [{"a", "b", "c"}]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    graph = import_graph()
    missing = {edge for edge in CYCLE_EDGES_ALLOWED if edge[1] not in graph.get(edge[0], set())}
    assert not missing, f"allowed cycle edges that are gone (remove them from the list): {missing}"
    for importer, imported in CYCLE_EDGES_ALLOWED:
        graph[importer] = graph[importer] - {imported}
    cycles = strongly_connected(graph)
    assert not cycles, f"import cycles (type-only and in-function imports count): {cycles}"


def test_arrows_between_packages() -> None:
    wrong: set[tuple[str, str]] = set()
    for importer, targets in import_graph().items():
        src = importer.split(".")[0]
        for target in targets:
            dst = target.split(".")[0]
            if dst != src and dst not in ALLOWED_ARROWS[src]:
                wrong.add((importer, target))
    assert wrong - ARROWS_ALLOWED == set(), "imports against the layering"
    assert ARROWS_ALLOWED - wrong == set(), "allowed arrows that are gone: remove them"


def test_no_module_over_the_line_limit() -> None:
    long = {
        name for name, path in modules().items() if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert long - LONG_MODULES_ALLOWED == set(), f"modules over {MAX_LINES} lines"
    assert LONG_MODULES_ALLOWED - long == set(), "allowed long modules that are short now: remove"


def test_every_package_is_installed() -> None:
    """CI installs editable from a clean clone: a package missing from pyproject's list would
    import here (from the work tree) and fail there."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for package in PACKAGES
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert found - listed == set(), "packages missing from [tool.setuptools] packages"


def test_every_name_imported_from_our_modules_exists() -> None:
    """`from nodes.x import y` anywhere (in a function too) names a module or an attribute that
    exists: a move that left a deferred import behind fails here, not on the first call."""
    import importlib

    missing: list[str] = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module.split(".")[0] not in PACKAGES:
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if not hasattr(module, alias.name) and full not in modules():
                    missing.append(f"{name}: from {node.module} import {alias.name}")
    assert not missing
