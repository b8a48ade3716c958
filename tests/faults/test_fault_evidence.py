"""The fault figures' evidence helpers (raysweep.testing.evidence) on a real run: one
tiny `raysweep train` (its own Ray, in a subprocess) writes real checkpoints, Ray
Train's snapshot, a real MLflow sqlite store and the probe's row files. Each test
plants one known loss in them and sees its figure count it, then undoes it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from raysweep.testing.evidence import (
    checkpoint_epochs,
    checkpoint_evidence,
    first_steps,
    mlflow_evidence,
    probe_row_ids,
    reported_checkpoints,
    row_counts,
    rows_committed,
    rows_seen,
)
from raysweep.testing.helpers import raysweep_cli
from raysweep.testing.probe import probe_spec, write_probe_data

REPO = Path(__file__).resolve().parents[2]


class Run:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.folder = root / "results" / "probe" / "probe-train"
        self.probe = root / "probe"
        self.expected = probe_row_ids(root / "data" / "train")

    def checkpoints(self) -> list[Path]:
        return sorted(p.resolve() for p in self.folder.glob("checkpoint_*") if p.is_dir())


def real_run(root: Path, command: str) -> Run:
    """`raysweep COMMAND` of the probe spec (2 epochs; tune: 2 trials) in `root`."""
    write_probe_data(root / "data")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(probe_spec(root / "data", root / "results", root / "probe")))
    ray_tmp = tempfile.mkdtemp(prefix="rs-")  # a cluster of its own (short, for Ray's socket paths)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "RAYSWEEP_BASE_DIR": str(root),
           "RAY_TMPDIR": ray_tmp}
    try:
        done = raysweep_cli(command, str(spec), cwd=REPO, env=env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return Run(root)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[Run]:
    """A 2-epoch probe training run, finished."""
    yield real_run(tmp_path_factory.mktemp("evidence"), "train")


def test_the_untouched_run_shows_no_loss(run) -> None:
    checkpoints = run.checkpoints()
    assert len(checkpoints) == 2, "one checkpoint per epoch, both kept"
    assert reported_checkpoints(run.folder, run.uri) == checkpoints
    assert sorted(checkpoint_epochs(run.folder).values()) == [0, 1]
    evidence = checkpoint_evidence(run.folder, run.uri)
    assert evidence.reported == tuple(checkpoints) and evidence.lost == () and evidence.unreported == ()
    runs = mlflow_evidence(run.uri)
    assert (runs.runs, runs.running, runs.duplicates) == (1, (), 0)
    assert len(run.expected) == 203
    assert row_counts({e: rows_seen(run.probe, [0], e) for e in (0, 1)}, run.expected) == \
        {"rows_repeated": 0, "rows_missed": 0}
    assert row_counts({e: rows_committed(run.probe, [0], e) for e in (0, 1)}, run.expected) == \
        {"rows_repeated": 0, "rows_missed": 0}
    assert list(first_steps(run.probe, 0).values()) == [(0, 0)], "one attempt, from the start"


def test_a_deleted_checkpoint_counts_as_lost(run, tmp_path) -> None:
    deleted = run.checkpoints()[-1]
    shutil.move(deleted, tmp_path / deleted.name)  # gone from the run folder
    try:
        evidence = checkpoint_evidence(run.folder, run.uri)
        assert evidence.missing == (deleted,) and evidence.unloadable == ()
        assert len(evidence.lost) == 1
        assert evidence.lost_except(deleted) == 0
        # The MLflow tag alone (the run's final checkpoint) still names it.
        assert checkpoint_evidence(tmp_path / "elsewhere", run.uri).missing == (deleted,)
    finally:
        shutil.move(tmp_path / deleted.name, deleted)
    assert checkpoint_evidence(run.folder, run.uri).lost == ()


def test_a_corrupted_checkpoint_counts_as_lost(run) -> None:
    torn = run.checkpoints()[0]
    state = torn / "state.pt"
    whole = state.read_bytes()
    state.write_bytes(whole[: len(whole) // 2])  # as a kill during its write would leave it
    try:
        evidence = checkpoint_evidence(run.folder, run.uri)
        assert evidence.unloadable == (torn,) and evidence.missing == ()
        assert len(evidence.lost) == 1
    finally:
        state.write_bytes(whole)
    assert checkpoint_evidence(run.folder, run.uri).lost == ()


def test_a_checkpoint_no_record_names_counts_as_unreported(run) -> None:
    stray = run.folder / "checkpoint_never_registered"
    shutil.copytree(run.checkpoints()[0], stray)  # as a worker's write whose report never arrived
    try:
        evidence = checkpoint_evidence(run.folder, run.uri)
        assert evidence.unreported == (stray.resolve(),) and evidence.lost == ()
    finally:
        shutil.rmtree(stray)


def test_a_duplicate_or_running_mlflow_run_counts(run, tmp_path) -> None:
    copy = tmp_path / "mlflow.db"
    shutil.copy(run.root / "mlflow.db", copy)
    uri = f"sqlite:///{copy}"
    client = MlflowClient(uri)
    (original,) = client.search_runs([client.get_experiment_by_name("probe").experiment_id])
    client.create_run(original.info.experiment_id, run_name="probe-train",
                      tags={"raysweep.key": original.data.tags["raysweep.key"]})  # left RUNNING
    runs = mlflow_evidence(uri)
    assert (runs.runs, runs.running, runs.duplicates) == (2, ("probe-train",), 1)
    assert mlflow_evidence(run.uri).duplicates == 0, "the run's own store is untouched"


def test_repeated_and_missed_rows_count(run, tmp_path) -> None:
    probe = tmp_path / "probe"
    shutil.copytree(run.probe, probe)
    seen = np.load(probe / "train-rank0-epoch1.npy")
    np.save(probe / "train-rank0-epoch1.npy", np.concatenate([seen, seen[:1]]))  # one row twice
    assert row_counts({e: rows_seen(probe, [0], e) for e in (0, 1)}, run.expected) == \
        {"rows_repeated": 1, "rows_missed": 0}
    (probe / "train-rank0-epoch0.npy").unlink()  # an epoch with no record misses every row
    assert row_counts({e: rows_seen(probe, [0], e) for e in (0, 1)}, run.expected)["rows_missed"] == 203
    log = probe / "steps-rank0.log"
    lines = log.read_text().splitlines()
    dropped = len(lines[-1].split(" ")[3].split(","))
    log.write_text("\n".join(lines[:-1]) + "\n")  # the epoch's last step never taken
    assert row_counts({e: rows_committed(probe, [0], e) for e in (0, 1)}, run.expected) == \
        {"rows_repeated": 0, "rows_missed": dropped}


def test_a_sweep_reports_each_trials_latest_checkpoint(tmp_path) -> None:
    """Tune trials (in-trial runs) keep 2 checkpoints each; each trial's latest must be
    there, an older one may be pruned."""
    sweep = real_run(tmp_path, "tune")
    folder = sweep.root / "results"
    on_disk = sorted(p.resolve() for p in folder.rglob("checkpoint_*") if p.is_dir())
    latest = [p for p in on_disk if p.name == "checkpoint_000001"]
    assert len(on_disk) == 4 and len(latest) == 2
    evidence = checkpoint_evidence(folder, sweep.uri)
    assert evidence.reported == tuple(latest) and evidence.lost == () and evidence.unreported == ()
    runs = mlflow_evidence(sweep.uri, trials_by="params")
    assert (runs.runs, runs.running, runs.duplicates) == (3, (), 0), "a parent and 2 trials"
    shutil.rmtree(on_disk[0])  # an older checkpoint, as num_to_keep would prune it: no loss
    assert checkpoint_evidence(folder, sweep.uri).lost == ()
    shutil.rmtree(latest[1])  # a trial's latest: lost
    evidence = checkpoint_evidence(folder, sweep.uri)
    assert evidence.missing == (latest[1],) and len(evidence.lost) == 1
