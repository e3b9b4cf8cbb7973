"""The product design's import rules, checked on the source: stages never import the wiring.

- ``features``, ``models`` and ``agent`` import from ``sensor`` only the leaf ``sensor.packets``;
- ``features`` never imports ``models`` or ``agent``;
- no import cycles between netwarden's modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("sensor", "features", "models", "agent")
LEAF_MODULES = {"sensor.packets"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {imp for imp in _imports(path) if imp in modules}
    return graph


def test_stages_do_not_import_the_wiring():
    offenders = []
    for module, deps in _graph().items():
        top = module.split(".")[0]
        for dep in deps:
            dep_top = dep.split(".")[0]
            if top in ("features", "models", "agent") and dep_top == "sensor" and dep not in LEAF_MODULES:
                offenders.append(f"{module} -> {dep}")
            if top == "features" and dep_top in ("models", "agent"):
                offenders.append(f"{module} -> {dep}")
    assert offenders == []


def test_leaf_modules_import_nothing_from_netwarden():
    graph = _graph()
    for leaf in LEAF_MODULES:
        assert graph[leaf] == set(), leaf


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep == node:
                continue
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
