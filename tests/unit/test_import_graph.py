"""raysweep's modules import in one direction: cli -> (run, prepare, registry,
reproduce) -> execution -> (data, tracking, cluster) -> config -> (errors,
_ray_compat, _upstream); no module imports one of a higher layer (lazy imports
included), and no two modules import each other, directly or round a circle
(module-level imports, `if TYPE_CHECKING:` ones included). raysweep.testing (test
support and benchmarks) is outside the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import raysweep

PACKAGE = Path(raysweep.__file__).resolve().parent
LAYERS = {"errors": 0, "report": 0, "_ray_compat": 0, "_upstream": 0, "config": 1, "data": 2, "tracking": 2,
          "cluster": 2, "execution": 3, "prepare": 4, "run": 4, "registry": 4, "reproduce": 4, "cli": 5, "__main__": 5}


def _modules(root: Path) -> dict[str, ast.Module]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        name = ".".join((root.name, *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        if name.split(".")[1:2] != ["testing"]:
            found[name] = ast.parse(path.read_text())
    return found


def _imported(node: ast.AST, package: str, known: dict) -> list[str]:
    """The package's modules an import statement names (`from P import m` names P.m when
    that is a module)."""
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
        subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known]
        return subs or [node.module]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == package]
    return []


def _layer(name: str) -> int | None:
    top = name.split(".")[1] if "." in name else None
    return LAYERS.get(top) if top else None


def upward_imports(root: Path) -> list[str]:
    modules = _modules(root)
    wrong = []
    for name, tree in modules.items():
        for node in ast.walk(tree):
            for target in _imported(node, root.name, modules):
                mine, theirs = _layer(name), _layer(target)
                if mine is not None and theirs is not None and name.split(".")[1] != target.split(".")[1] \
                        and theirs > mine:
                    wrong.append(f"{name} (layer {mine}) imports {target} (layer {theirs}), line {node.lineno}")
    return wrong


def import_cycles(root: Path) -> list[list[str]]:
    """Strongly connected groups of modules (more than one) over module-level imports."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, tree in modules.items():
        nodes = []
        for node in tree.body:
            nodes += node.body if isinstance(node, ast.If) else [node]  # (if TYPE_CHECKING: ...)
        graph[name] = {t for n in nodes for t in _imported(n, root.name, modules) if t in modules and t != name}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_module_imports_a_higher_layer():
    assert upward_imports(PACKAGE) == []


def test_no_import_cycles():
    assert import_cycles(PACKAGE) == []


def test_a_planted_cycle_and_upward_import_are_found(tmp_path):
    pkg = tmp_path / "raysweep"
    (pkg / "tracking").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "tracking" / "__init__.py").write_text("")
    (pkg / "tracking" / "console.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from raysweep.run import Result\n")
    (pkg / "run.py").write_text("from raysweep.tracking import console\n")
    assert import_cycles(pkg) == [["raysweep.run", "raysweep.tracking.console"]]
    assert upward_imports(pkg) == ["raysweep.tracking.console (layer 2) imports raysweep.run (layer 4), line 3"]
