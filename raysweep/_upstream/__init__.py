"""Every use of a private name of Ray (and the libraries raysweep builds on) that the
engine cannot do without, one module per concern, and nothing else.

Each module says what it touches, why no public API does it, and what to recheck when
the library moves. It declares the Ray versions it was checked for (`CHECKED`: at
least the first, below the second, so 2.60.x patch releases pass) and `PINS`: the
upstream functions and classes its code depends on, with a digest of each one's
source as checked. `tests/unit/test_upstream.py` fails, naming the function and the
module's recheck note, when an installed source differs from its pin or the installed
Ray is outside a module's range; it also fails on a private name of Ray, Optuna,
Lightning or torch used anywhere else in the engine (apart from the list of uses not
moved here yet, which may only shrink).

To re-pin after a check: `python -m raysweep._upstream` prints every pin's current
digest.

A patch that replaces an upstream function keeps it as `_raysweep_original` on the
replacement, so a pin reads the upstream source also after the patch is applied.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import textwrap
from dataclasses import dataclass

MODULES = ("cluster", "tune_failures", "train", "optuna_internals", "torch_internals")


@dataclass(frozen=True)
class Pin:
    """An upstream object ("package.module:Qualified.name") and the digest of its source
    as checked ("" for a compiled object: then only that it exists is checked)."""

    target: str
    digest: str

    def resolve(self) -> object:
        module, _, qualname = self.target.partition(":")
        obj: object = importlib.import_module(module)
        for part in qualname.split(".") if qualname else ():
            obj = getattr(obj, part)
        while hasattr(obj, "_raysweep_original"):  # (patched in this process: the upstream one)
            obj = obj._raysweep_original
        return obj

    def current(self) -> str:
        """The installed object's digest ("" when it has no Python source)."""
        try:
            source = inspect.getsource(self.resolve())  # type: ignore[arg-type]
        except (TypeError, OSError):
            return ""
        return hashlib.sha256(textwrap.dedent(source).encode()).hexdigest()[:16]


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def in_range(version: str, checked: tuple[str, str]) -> bool:
    """`version` >= checked[0] and < checked[1]."""
    return version_tuple(checked[0]) <= version_tuple(version) < version_tuple(checked[1])


if __name__ == "__main__":  # (re-pinning: see the module docstring)
    for name in MODULES:
        module = importlib.import_module(f"raysweep._upstream.{name}")
        for pin in module.PINS:
            print(f"{name}: Pin({pin.target!r}, {pin.current()!r})")
