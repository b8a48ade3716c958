"""raysweep._upstream holds every private name of Ray, Optuna, Lightning and torch the
engine uses: each module's pinned upstream sources are unchanged in the installed
versions, and no private name is used elsewhere (apart from NOT_MOVED_YET, which may
only shrink)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest
import ray

from raysweep import _upstream
from raysweep._upstream import tune_failures  # noqa: F401  # (patched in a test)

PACKAGE = Path(_upstream.__file__).resolve().parents[1]
LIBS = ("ray", "optuna", "lightning", "pytorch_lightning", "torch")
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_exit"}  # (and os._exit: documented)

NOT_MOVED_YET: set[tuple[str, str]] = set()  # (file, private name): uses still to move here


def _modules() -> list:
    return [importlib.import_module(f"raysweep._upstream.{name}") for name in _upstream.MODULES]


def _recheck(module) -> str:
    doc = module.__doc__ or ""
    return doc[doc.find("Recheck"):].split("\n\n")[0].replace("\n", " ") if "Recheck" in doc else "(no note)"


def test_every_module_is_listed_and_documented():
    on_disk = sorted(p.stem for p in Path(_upstream.__file__).parent.glob("*.py") if p.stem != "__init__")
    assert on_disk == sorted(_upstream.MODULES)
    for module in _modules():
        assert "Why private" in module.__doc__ and "Recheck" in module.__doc__, module.__name__
        assert module.PINS, f"{module.__name__} pins nothing"


@pytest.mark.parametrize("name", _upstream.MODULES)
def test_the_installed_ray_is_in_each_modules_checked_range(name):
    module = importlib.import_module(f"raysweep._upstream.{name}")
    assert _upstream.in_range(ray.__version__, module.CHECKED), (
        f"Ray {ray.__version__} is outside {module.CHECKED} that raysweep/_upstream/{name}.py was checked for: "
        f"{_recheck(module)}")


@pytest.mark.parametrize("pin", [(m.__name__.rsplit(".", 1)[1], p) for m in _modules() for p in m.PINS],
                         ids=lambda item: item[1].target)
def test_each_pinned_upstream_source_is_unchanged(pin):
    name, pin = pin
    module = importlib.import_module(f"raysweep._upstream.{name}")
    # (with raysweep's patches applied, as in a sweep: a pin reads the upstream source)
    _upstream.tune_failures.one_failure_per_actor_death()
    try:
        current = pin.current()
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{pin.target} is gone ({exc}): recheck raysweep/_upstream/{name}.py: {_recheck(module)}")
    assert current == pin.digest, (
        f"{pin.target} changed upstream (digest {current}, pinned {pin.digest}): recheck "
        f"raysweep/_upstream/{name}.py: {_recheck(module)}; then re-pin (python -m raysweep._upstream)")


def test_in_range_reads_patch_releases():
    assert _upstream.in_range("2.60.3", ("2.60.0", "2.61.0"))
    assert not _upstream.in_range("2.61.0", ("2.60.0", "2.61.0"))
    assert not _upstream.in_range("2.59.9", ("2.60.0", "2.61.0"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in NAMEDTUPLE_API


def _foreign_privates(module_name: str, class_name: str) -> set[str]:
    """The private names in the sources of a raysweep class's upstream bases."""
    cls = getattr(importlib.import_module(module_name), class_name, None)
    names: set[str] = set()
    for base in getattr(cls, "__mro__", ())[1:]:
        if base.__module__.split(".")[0] in LIBS:
            try:
                names |= set(re.findall(r"\b(_[A-Za-z]\w*)", inspect.getsource(base)))
            except (TypeError, OSError):
                pass
    return {n for n in names if _private(n)}


def private_uses(root: Path) -> set[tuple[str, str]]:
    """(file relative to the package, name) for each private name of the libraries used
    in the package outside raysweep/_upstream: a private module or name imported from
    them, a private attribute of an object raysweep does not define, and a private
    attribute of an upstream base class used through `self`."""
    files = [p for p in root.rglob("*.py") if "_upstream" not in p.parts]
    trees = {p: ast.parse(p.read_text()) for p in files}
    own: set[str] = set()
    for tree in trees.values():
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(n.name)
            elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
                own.add(n.attr)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                own.add(n.id)
    uses: set[tuple[str, str]] = set()
    for path, tree in trees.items():
        rel = path.relative_to(root).as_posix()
        module_name = "raysweep." + rel[:-3].replace("/", ".")
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] in LIBS:
                if any(_private(p) for p in n.module.split(".")):
                    uses.add((rel, n.module))
                uses |= {(rel, f"{n.module}.{a.name}") for a in n.names if _private(a.name)}
            elif isinstance(n, ast.Import):
                uses |= {(rel, a.name) for a in n.names
                         if a.name.split(".")[0] in LIBS and any(_private(p) for p in a.name.split("."))}
            elif isinstance(n, ast.Attribute) and _private(n.attr) and n.attr not in own:
                uses.add((rel, "." + n.attr))
            elif isinstance(n, ast.ClassDef) and n.bases:
                foreign = _foreign_privates(module_name, n.name)
                uses |= {(rel, "." + a.attr) for a in ast.walk(n) if isinstance(a, ast.Attribute)
                         and isinstance(a.value, ast.Name) and a.value.id == "self" and a.attr in foreign}
    return uses


def test_private_names_of_ray_optuna_lightning_torch_are_used_only_in_upstream():
    uses = private_uses(PACKAGE)
    new = sorted(uses - NOT_MOVED_YET)
    assert not new, f"private names used outside raysweep/_upstream (move them there, with pins): {new}"
    moved = sorted(NOT_MOVED_YET - uses)
    assert not moved, f"no longer used, take them off NOT_MOVED_YET: {moved}"


def test_the_scan_finds_a_private_use(tmp_path):
    """A planted use of each kind is found (the scan cannot pass by finding nothing)."""
    (tmp_path / "planted.py").write_text(
        "from ray._private import state\nimport ray._raylet\n\n"
        "def f(controller):\n    return controller._actor_to_trial\n")
    assert private_uses(tmp_path) == {("planted.py", "ray._private"), ("planted.py", "ray._raylet"),
                                      ("planted.py", "._actor_to_trial")}
