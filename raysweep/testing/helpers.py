"""Helpers the test suite shares (and scripts may use): free ports, the listening
sockets of process groups, waiting for a process to write its pid, `python -m
raysweep` in a subprocess, MLflow run lookups, and an uninterrupted probe run to
compare against. (A store that writes nothing: `raysweep.testing.stores.NullStore`.)

Heavy imports (MLflow, torch, the engine) happen inside the functions that need
them, so a script that only lists sockets stays quick to start.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

# --- processes and sockets ----------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it; it stays free until
    someone binds it, so use it soon)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def listening_sockets(groups: Mapping[int, str] | Iterable[int]) -> list[dict[str, Any]]:
    """Every listening TCP socket of processes in the given process groups (and their
    children), read from /proc (`raysweep.cluster.sockets`).

    `groups` maps a process group id to a label naming who started it (a plain
    iterable of group ids labels them ""). Each socket is a dict: `bind`
    (address:port), `process` (its command name), `started_by` (the group's label)
    and `loopback_only`. Sorted by label, then address; a socket that several
    processes of one group share is listed once.
    """
    from raysweep.cluster.sockets import in_groups, listening

    labels = dict(groups) if isinstance(groups, Mapping) else dict.fromkeys(groups, "")
    found: list[dict[str, Any]] = []
    for group, label in labels.items():
        for item in listening(in_groups([group])):
            entry = {"bind": item.bind, "process": item.process, "started_by": label,
                     "loopback_only": item.loopback}
            if entry not in found:
                found.append(entry)
    return sorted(found, key=lambda s: (s["started_by"], s["bind"], s["process"]))


def wait_for_pid(path: Path, timeout: float = 180, other_than: str | None = None) -> int:
    """The pid a process writes to `path` (the probe trainer's PROBE/pause.pid, when
    it pauses mid-epoch): polls until the file holds a pid, other than `other_than`
    (the text of a pid seen before). Raises AssertionError after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            text = path.read_text().strip()
            if text and text != other_than:
                return int(text)
        time.sleep(0.05)
    raise AssertionError(f"no process paused ({path} not written in {timeout:.0f} s)")


@contextlib.contextmanager
def cluster_up(root: Path, profile: dict[str, Any], cwd: str | Path) -> Iterator[tuple[Path, Any, str]]:
    """`raysweep cluster up` of the local `profile` (written to root/NAME.yaml, its state
    and token under root/state through RAYSWEEP_STATE_DIR, set while it is up); yields
    (profile path, ClusterState, up's stdout); `cluster down` after, which must stop
    every process it started."""
    import yaml

    from raysweep.cluster.local import ClusterState

    path = root / f"{profile['name']}.yaml"
    path.write_text(yaml.safe_dump(profile))
    before = os.environ.get("RAYSWEEP_STATE_DIR")
    os.environ["RAYSWEEP_STATE_DIR"] = str(root / "state")
    try:
        up = raysweep_cli("cluster", "up", str(path), cwd=cwd)
        assert up.returncode == 0, up.stderr
        state = ClusterState.load(profile["name"])
        assert state is not None, up.stdout
        yield path, state, up.stdout
        down = raysweep_cli("cluster", "down", str(path), cwd=cwd)
        assert down.returncode == 0, down.stderr
        assert not state.alive(), "cluster down left processes running"
    finally:
        if before is None:
            os.environ.pop("RAYSWEEP_STATE_DIR", None)
        else:
            os.environ["RAYSWEEP_STATE_DIR"] = before


def raysweep_cli(*args: str, cwd: str | Path | None = None, env: Mapping[str, str] | None = None,
                 timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python -m raysweep ARGS` in a subprocess (this interpreter), output captured
    as text; `env` defaults to this process's environment."""
    return subprocess.run([sys.executable, "-m", "raysweep", *args], cwd=cwd,
                          env=dict(env) if env is not None else os.environ.copy(),
                          capture_output=True, text=True, timeout=timeout)


# --- MLflow lookups -------------------------------------------------------------


def experiment_runs(uri: str, experiment: str = "probe", order_by: Sequence[str] | None = None) -> list[Run]:
    """Every run of the named experiment in the store at `uri` (the experiment must
    exist, once)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name == experiment]
    return client.search_runs([exp.experiment_id], order_by=list(order_by) if order_by else None)


def only_run(uri: str, experiment: str = "probe") -> Run:
    """The experiment's one run (a training run, resumed or not, has exactly one)."""
    runs = experiment_runs(uri, experiment)
    assert len(runs) == 1, f"{len(runs)} MLflow runs for one training run"
    return runs[0]


def sweep_runs(uri: str, experiment: str = "probe") -> tuple[list[Run], list[Run]]:
    """(parents, children) of the experiment: runs without an MLflow parent, and runs
    whose parent is the first of those."""
    runs = experiment_runs(uri, experiment)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    first = parents[0].info.run_id if parents else None
    children = [r for r in runs if first is not None and r.data.tags.get("mlflow.parentRunId") == first]
    return parents, children


def metric_series(uri_or_client: str | MlflowClient, run_id: str, metric: str) -> list[tuple[int, float]]:
    """A metric's (step, value) pairs as MLflow returns them (a step logged twice shows twice)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri_or_client) if isinstance(uri_or_client, str) else uri_or_client
    return [(m.step, m.value) for m in client.get_metric_history(run_id, metric)]


def metric_history(uri: str, run_id: str, metric: str) -> dict[int, float]:
    """A metric by step (the last value logged at each step)."""
    return dict(metric_series(uri, run_id, metric))


def wait_for_epoch(uri: str, epoch: int, timeout: float = 180, experiment: str = "probe",
                   metric: str = "val_loss") -> None:
    """Until some run of `experiment` has `metric` at step `epoch`: the driver has taken
    that epoch's report (and registered its checkpoint). Faults are timed by reported
    epochs. Raises AssertionError after `timeout` seconds."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    deadline = time.time() + timeout
    while time.time() < deadline:
        exps = [e for e in client.search_experiments() if e.name == experiment]
        for run in client.search_runs([exps[0].experiment_id]) if exps else []:
            if any(m.step >= epoch for m in client.get_metric_history(run.info.run_id, metric)):
                return
        time.sleep(0.1)
    raise AssertionError(f"epoch {epoch} was not reported in {timeout:.0f} s")


def max_rel_change(uri: str, run_id: str, expected: list[dict[str, float]],
                   metrics: Sequence[str] = ("train_loss", "val_loss")) -> float:
    """The largest relative difference between a run's logged `metrics` and `expected`
    (one dict per epoch); asserts the run logged exactly epochs 0..len(expected)-1."""
    worst = 0.0
    for metric in metrics:
        got = metric_history(uri, run_id, metric)
        assert sorted(got) == list(range(len(expected))), f"{metric}: epochs {sorted(got)}"
        for epoch, row in enumerate(expected):
            worst = max(worst, abs(got[epoch] - row[metric]) / max(abs(row[metric]), 1e-12))
    return worst


# --- probe runs -----------------------------------------------------------------


def probe_params(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """The probe trainer's params (as `probe_spec` sets them), with `extra` added: e.g.
    pause_epoch, pause_once, pause_after_done, fault."""
    return {"batch_size": 16, "lr": 0.1, "probe_dir": str(tmp_path / "probe"), "nan_epoch": -1, **extra}


def reference(spec_path: Path, epochs: int, tmp_path: Path) -> list[dict[str, float]]:
    """The spec's probe run uninterrupted, in this process (same trainer, data and
    seed, no pause, probe files under tmp_path/reference-probe): its per-epoch metrics."""
    from raysweep.config.load import load_spec
    from raysweep.data.arrays import load_arrays
    from raysweep.data.files import resolve_data
    from raysweep.testing.probe import train as probe_train
    from raysweep.worker.context import TrainContext

    spec = load_spec(spec_path)
    params = {**spec.params, "pause_epoch": -1, "probe_dir": str(tmp_path / "reference-probe")}
    train, validation = load_arrays(resolve_data(spec.data, str(spec_path)))
    ctx, reports = TrainContext.in_process(train, validation, params, num_epochs=epochs, seed=spec.seed)
    probe_train(ctx)
    return [m for m, _ in reports]
