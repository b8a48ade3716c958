"""Fixtures of the unit tests, and the tier's guard: a unit test that starts a
subprocess, a process or Ray fails, saying where it belongs (the tiers:
tests/conftest.py)."""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing.process
import os
import shutil
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import ray._private.worker as ray_worker

# Imported before any guard: the first import of MLflow runs `uname -p` (its
# telemetry's platform.processor()) and of matplotlib `fc-list` (its font cache). A
# test module that is the first to import them, run alone (test_hostile_input.py in
# scripts/faults.sh), would trip the guard on them. Matplotlib's cache goes to a
# folder of this run's, not the user's ~/.cache.
_MPL = tempfile.mkdtemp(prefix="raysweep-unit-mpl-")
atexit.register(shutil.rmtree, _MPL, ignore_errors=True)
os.environ.setdefault("MPLCONFIGDIR", _MPL)
import raysweep.run  # noqa: E402,F401


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    """A throwaway HOME and raysweep state dir (cluster tokens, launcher copies):
    nothing touches the user's ~ or ~/.ray."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAYSWEEP_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


# ---------------------------------------------------------------- the tier's guard


class UnitTierError(RuntimeError):
    """A unit test started a process, or Ray."""


MOVE = ("the unit tier starts no subprocess, server or Ray (scripts/test.sh --fast runs it alone): "
        "move the test to tests/integration/ (processes, servers, the shared Ray cluster), "
        "tests/cluster/ (clusters of its own) or tests/faults/ (fault injection)")


@contextlib.contextmanager
def no_processes_or_ray(nodeid: str) -> Iterator[list[str]]:
    """While it is on, starting a subprocess (subprocess.Popen: subprocess.run and Ray's
    own launches too), a multiprocessing process, a fork or spawn, or ray.init raises
    UnitTierError naming the test and where it belongs. Yields what was refused, so a
    test that swallows the error still fails."""
    refused: list[str] = []

    def refuse(patch: pytest.MonkeyPatch, owner: Any, name: str, what: str) -> None:
        def refused_call(*args: Any, **kwargs: Any) -> Any:
            refused.append(what)
            raise UnitTierError(f"{nodeid} started {what}: {MOVE}")

        # Named as what it replaces: pickle still writes a reference to os.system
        # (a hostile checkpoint's payload in test_trainer.py) by its name.
        refused_call.__module__ = getattr(owner, "__module__", None) or owner.__name__
        refused_call.__qualname__ = f"{owner.__qualname__}.{name}" if isinstance(owner, type) else name
        patch.setattr(owner, name, refused_call)

    with pytest.MonkeyPatch.context() as patch:
        refuse(patch, subprocess.Popen, "__init__", "a subprocess (subprocess.Popen)")
        refuse(patch, multiprocessing.process.BaseProcess, "start", "a process (multiprocessing)")
        for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
            if hasattr(os, name):
                refuse(patch, os, name, f"a process (os.{name})")
        refuse(patch, ray, "init", "Ray (ray.init)")
        refuse(patch, ray_worker, "init", "Ray (ray.init)")
        yield refused


def _guarded(item: pytest.Item) -> Generator[None, Any, Any]:
    """One phase of a unit test (set-up with its fixtures, call, teardown) under the guard."""
    with no_processes_or_ray(item.nodeid) as refused:
        result = yield
    if refused:  # the test caught UnitTierError and went on
        pytest.fail(f"{item.nodeid} started {', '.join(dict.fromkeys(refused))}: {MOVE}", pytrace=False)
    return result


# Hooks of this conftest run for the tests under tests/unit only.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _guarded(item))


@pytest.fixture
def world(tmp_path, monkeypatch):
    """(folder, spec path, data folder): a valid probe spec on a private copy of the
    data, in an empty working directory; afterwards, that the input under test started
    neither Ray nor MLflow and wrote no run folder."""
    import yaml

    from raysweep.testing.probe import probe_spec, write_probe_data

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = tmp_path / "data"
    write_probe_data(data)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(probe_spec(data, tmp_path / "results", tmp_path / "probe")))
    ray_was_up = ray.is_initialized()
    yield tmp_path, spec, data
    assert ray.is_initialized() == ray_was_up, "bad input started Ray"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists(), "MLflow was written"
    assert not (tmp_path / "results").exists() and not (tmp_path / "probe").exists(), "a run folder was written"
