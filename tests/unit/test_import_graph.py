"""raysweep's modules import in one direction: cli -> (run, prepare, registry,
reproduce) -> driver -> worker -> (data, tracking, cluster) -> config -> (errors,
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
          "cluster": 2, "worker": 3, "driver": 4, "prepare": 5, "run": 5, "registry": 5, "reproduce": 5, "cli": 6,
          "__main__": 6}


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
    assert upward_imports(pkg) == ["raysweep.tracking.console (layer 2) imports raysweep.run (layer 5), line 3"]


DRIVER_ONLY = ("optuna", "mlflow", "pydantic", "yaml", "ray.tune", "raysweep.config", "raysweep.tracking",
               "raysweep.driver")
"""What a training process must not load: a `raysweep.worker` module imports none of these
at module level (`if TYPE_CHECKING:` blocks aside); a lazy import inside a function is
allowed (the in-trial entry point reports through `ray.tune`, the driver's only).
tests/integration/test_sweep.py checks the same in real trials' `sys.modules`."""


def driver_imports_of_worker(root: Path) -> list[str]:
    found = []
    for path in sorted((root / "worker").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # (module level only; `if TYPE_CHECKING:` bodies are not run)
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if names == ["ray"] and isinstance(node, ast.ImportFrom):  # (from ray import train, tune)
                names = [f"ray.{a.name}" for a in node.names]
            for name in names:
                if any(name == d or name.startswith(d + ".") for d in DRIVER_ONLY):
                    found.append(f"raysweep/worker/{path.name}:{node.lineno} imports {name}")
    return found


def test_the_worker_package_imports_nothing_of_the_driver():
    assert driver_imports_of_worker(PACKAGE) == []


def test_a_planted_driver_import_in_the_worker_is_found(tmp_path):
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "entry.py").write_text(
        "import ray\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import optuna\n"
        "from ray import train, tune\nimport mlflow.tracking\nfrom raysweep.driver.plan import plan_from_spec\n")
    assert driver_imports_of_worker(tmp_path) == [
        "raysweep/worker/entry.py:5 imports ray.tune", "raysweep/worker/entry.py:6 imports mlflow.tracking",
        "raysweep/worker/entry.py:7 imports raysweep.driver.plan"]
