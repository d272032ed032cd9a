"""The ortkube import graph has no cycles, counting imports hidden in functions.

Edges come from every ``import``/``from ... import`` in a module, at any depth (a function-level
import that dodges a cycle is still an edge), except under ``if TYPE_CHECKING:``. Importing
``a.b.c`` from outside the package ``a.b`` also runs ``a/b/__init__.py`` first, so that is an
edge too: it is how ``source -> engine.s3_client -> engine/__init__ -> ... -> source`` cycled.
The same graph shows the product (operator/, runtime/) importing nothing of the dev tooling.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PREFIX = "ortkube"
# Each of these folders holds a portion of the ``ortkube`` namespace package: the product's
# two halves, and the dev tooling's distribution beside them.
NAMESPACE_ROOTS = sorted(
    p.parent.name for p in REPO.glob(f"*/{PREFIX}") if p.is_dir() and any(p.rglob("*.py"))
)
PRODUCT_ROOTS = ("operator", "runtime")

Graph = dict[str, set[str]]


def module_names(roots: Iterable[Path]) -> dict[str, Path]:
    """``ortkube.x.y`` -> its file, for every module under ``<root>/ortkube``."""
    modules: dict[str, Path] = {}
    for root in roots:
        for path in sorted((root / PREFIX).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth, skipping ``if TYPE_CHECKING:`` bodies."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imported(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    """Absolute names a statement imports (``from p import m`` yields ``p.m`` and ``p``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = importer if is_package else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}".rstrip(".") if base else package
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _with_packages(target: str, importer: str, modules: dict[str, Path]) -> set[str]:
    """``target`` and each package ``__init__`` importing it runs first, outside ``importer``."""
    found = set()
    parts = target.split(".")
    for end in range(2, len(parts) + 1):
        name = ".".join(parts[:end])
        inside = importer == name or importer.startswith(f"{name}.")
        if name in modules and (name == target or not inside):
            found.add(name)
    return found


def import_graph(roots: Iterable[Path]) -> Graph:
    """module -> the ortkube modules its execution imports."""
    modules = module_names(roots)
    graph: Graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in _import_nodes(tree):
            for target in _imported(node, name, path.name == "__init__.py"):
                if target == PREFIX or target.startswith(f"{PREFIX}."):
                    edges |= _with_packages(target, name, modules)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """One concrete cycle (``[a, b, ..., a]``) per strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(group, graph) for group in groups]


def _cycle_in(group: set[str], graph: Graph) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def test_ortkube_modules_import_each_other_without_a_cycle() -> None:
    graph = import_graph(REPO / root for root in NAMESPACE_ROOTS)
    assert len(graph) > 50, "the scan found too few modules to be looking at the tree"
    cycles = [" -> ".join(cycle) for cycle in find_cycles(graph)]
    assert not cycles, "import cycles (a helper both sides need goes to a leaf module):\n" + (
        "\n".join(cycles)
    )


def imports_leaving(repo: Path, roots: Iterable[str], product: Iterable[str]) -> list[str]:
    """``module -> target`` for each import from the ``product`` roots of anything outside."""
    graph = import_graph(repo / root for root in roots)
    inside = set(module_names(repo / root for root in product))
    return sorted(f"{m} -> {t}" for m in inside for t in graph[m] if t not in inside)


def test_the_product_imports_nothing_of_the_dev_tooling() -> None:
    assert set(PRODUCT_ROOTS) <= set(NAMESPACE_ROOTS)
    leaks = imports_leaving(REPO, NAMESPACE_ROOTS, PRODUCT_ROOTS)
    assert not leaks, "the product (operator/, runtime/) imports dev tooling:\n" + "\n".join(leaks)


def _plant(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        pytest.param(
            {
                "ortkube/runtime/a.py": "from ortkube.runtime.b import g\n",
                "ortkube/runtime/b.py": "def g():\n    from ortkube.runtime import a\n",
            },
            ["ortkube.runtime.a", "ortkube.runtime.b", "ortkube.runtime.a"],
            id="hidden-in-a-function",
        ),
        pytest.param(
            {
                "ortkube/runtime/source.py": "from ortkube.runtime.engine.s3 import c\n",
                "ortkube/runtime/engine/__init__.py": "from ortkube.runtime.engine.prep import p\n",
                "ortkube/runtime/engine/prep.py": "from ortkube.runtime import source\n",
                "ortkube/runtime/engine/s3.py": "c = 1\n",
            },
            [
                "ortkube.runtime.engine",
                "ortkube.runtime.engine.prep",
                "ortkube.runtime.source",
                "ortkube.runtime.engine",
            ],
            id="through-a-package-init",
        ),
        pytest.param(
            {
                "ortkube/operator/crd.py": "from . import reference\n",
                "ortkube/operator/reference.py": "from .crd import render\n",
            },
            ["ortkube.operator.crd", "ortkube.operator.reference", "ortkube.operator.crd"],
            id="relative",
        ),
    ],
)
def test_a_planted_cycle_is_found_and_named(
    tmp_path: Path, files: dict[str, str], cycle: list[str]
) -> None:
    graph = import_graph([_plant(tmp_path, files)])
    assert find_cycles(graph) == [cycle]


def test_imports_for_type_checking_and_inside_a_package_are_not_cycles(tmp_path: Path) -> None:
    root = _plant(
        tmp_path,
        {
            "ortkube/runtime/engine/__init__.py": "from ortkube.runtime.engine.store import S\n",
            "ortkube/runtime/engine/store.py": "from ortkube.runtime.engine.errors import E\n",
            "ortkube/runtime/engine/errors.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from ortkube.runtime.engine.store import S\n"
            ),
        },
    )
    assert find_cycles(import_graph([root])) == []


def test_a_planted_import_of_dev_tooling_is_found(tmp_path: Path) -> None:
    _plant(
        tmp_path,
        {
            "runtime/ortkube/runtime/sample.py": "def port():\n    from ortkube.dev import free\n",
            "devtools/ortkube/dev/__init__.py": "free = 0\n",
        },
    )
    leaks = imports_leaving(tmp_path, ["devtools", "runtime"], ["runtime"])
    assert leaks == ["ortkube.runtime.sample -> ortkube.dev"]
