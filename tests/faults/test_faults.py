"""Fault injection: real SIGKILLs of real processes, timed by marker files.

The probe trainer (raysweep.testing.probe) pauses mid-epoch at `params.pause_epoch` and
writes its pid to PROBE/pause.pid; the test kills that process (a training worker)
or the driver, and checks that the run or sweep resumes from its last checkpoint,
ends with the metrics of an uninterrupted run, and leaves MLflow and the Optuna
study telling the truth. Every case writes its figures through `fault_figures`,
each measured (raysweep.testing.evidence: checkpoints on disk against the ones the run
reported, rows the probe trained on, MLflow runs read back) and recorded before the
assertions that check it, so a failing case still leaves its true figures.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from raysweep.cli import main
from raysweep.testing.evidence import (
    checkpoint_epochs,
    checkpoint_evidence,
    first_steps,
    mlflow_evidence,
    probe_row_ids,
    run_figures,
)
from raysweep.testing.helpers import (
    experiment_runs,
    max_rel_change,
    only_run,
    probe_params,
    reference,
    sweep_runs,
    wait_for_epoch,
    wait_for_pid,
)
from raysweep.tracking.study import load_study

REPO = Path(__file__).resolve().parents[2]


def train_folder(tmp_path: Path) -> Path:
    """Where `raysweep train` of the probe spec keeps its run (and checkpoints)."""
    return tmp_path / "results" / "probe" / "probe-train"


def in_thread(argv: list[str]) -> tuple[threading.Thread, dict[str, int]]:
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", main(argv)), daemon=True)
    thread.start()
    return thread, result


def test_killed_worker_resumes_from_its_checkpoint(ray_cluster, mlflow_uri, write_spec, tmp_path, fault_figures,
                                                   probe_data):
    """Case 1: SIGKILL a training worker mid-epoch; max_failures=1 restarts it from the
    last checkpoint; final metrics equal an uninterrupted run's (relative 1e-6)."""
    spec = write_spec(params=probe_params(tmp_path, pause_epoch=1), failure={"max_failures": 1},
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 3})
    thread, result = in_thread(["train", str(spec)])
    pid = wait_for_pid(tmp_path / "probe" / "pause.pid")
    wait_for_epoch(mlflow_uri, 0)
    epoch0 = (tmp_path / "probe" / "train-rank0-epoch0.npy").stat().st_mtime_ns
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    fault_figures(faults_injected=1)  # counted now: a case that then fails shows as not survived
    at_kill = checkpoint_evidence(train_folder(tmp_path), mlflow_uri)
    thread.join(timeout=300)
    fault_figures(**run_figures(mlflow_uri, train_folder(tmp_path), earlier=[at_kill], probe=tmp_path / "probe",
                                epochs=range(3), expected=probe_row_ids(probe_data / "train")))
    assert result.get("code") == 0
    run = only_run(mlflow_uri)
    assert run.info.status == "FINISHED"
    change = max_rel_change(mlflow_uri, run.info.run_id, reference(spec, 3, tmp_path))
    fault_figures(metric_change=change)
    assert change <= 1e-6
    assert (tmp_path / "probe" / "train-rank0-epoch0.npy").stat().st_mtime_ns == epoch0, "epoch 0 ran again"
    resumed = min(m.timestamp for m in MlflowClient(mlflow_uri).get_metric_history(run.info.run_id, "val_loss")
                  if m.step == 1) / 1000
    fault_figures(faults_survived=1, recovery_s=resumed - killed_at)


def test_retry_budget_exceeded_fails_naming_the_restore_path(ray_cluster, mlflow_uri, write_spec, tmp_path, capsys,
                                                              fault_figures):
    """Case 3: two worker kills with max_failures=1: exit 1, the message names where
    the checkpoints are, MLflow run FAILED."""
    spec = write_spec(params=probe_params(tmp_path, pause_epoch=1, pause_once=False), failure={"max_failures": 1})
    thread, result = in_thread(["train", str(spec)])
    previous = None
    kills = 0
    for _ in range(2):
        pid = wait_for_pid(tmp_path / "probe" / "pause.pid", other_than=previous)
        previous = str(pid)
        os.kill(pid, signal.SIGKILL)
        kills += 1
        fault_figures(faults_injected=1, expected_failure=True)
    thread.join(timeout=300)
    fault_figures(**run_figures(mlflow_uri, train_folder(tmp_path)))
    assert result.get("code") == 1
    err = capsys.readouterr().err
    folder = tmp_path / "results" / "probe" / "probe-train"
    assert f"checkpoints in {folder}" in err and "re-run" in err
    assert only_run(mlflow_uri).info.status == "FAILED"
    fault_figures(handled_as_expected=kills)


def test_torn_checkpoint_is_never_loaded(ray_cluster, mlflow_uri, write_spec, tmp_path, capsys, fault_figures):
    """Case 6 (run level): the latest checkpoint's file is cut short, as a kill during
    its write would leave it: the resumed run fails saying so; it does not load it
    and does not start from scratch."""
    spec = write_spec()
    assert main(["train", str(spec)]) == 0
    checkpoints = sorted(p for p in train_folder(tmp_path).glob("checkpoint_*") if p.is_dir())
    torn_epoch = checkpoint_epochs(train_folder(tmp_path))[checkpoints[-1].resolve()]
    state = checkpoints[-1] / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    fault_figures(faults_injected=1)
    before = set(first_steps(tmp_path / "probe", 0))
    epoch0 = (tmp_path / "probe" / "train-rank0-epoch0.npy").stat().st_mtime_ns
    capsys.readouterr()
    code = main(["train", str(spec), "--set", "scheduler.max_epochs=3"])
    # An attempt that loaded the torn checkpoint would start right after its epoch.
    loaded = sum(start == (torn_epoch + 1, 0) for pid, start in first_steps(tmp_path / "probe", 0).items()
                 if pid not in before)
    fault_figures(torn_checkpoints_loaded=loaded,
                  **run_figures(mlflow_uri, train_folder(tmp_path), planted=[checkpoints[-1]]))
    assert code == 1
    err = capsys.readouterr().err
    assert "incomplete" in err and str(checkpoints[-1]) in err
    assert (tmp_path / "probe" / "train-rank0-epoch0.npy").stat().st_mtime_ns == epoch0, "started from scratch"
    assert not (tmp_path / "probe" / "train-rank0-epoch2.npy").exists()
    fault_figures(faults_survived=1)


def test_oom_and_nan_trials_fail_alone(ray_cluster, mlflow_uri, write_spec, tmp_path, capsys, fault_figures):
    """Case 7: one trial runs out of memory, one reports NaN: both FAILED with the
    reason, the others finish, the sweep exits 0 and names them."""
    space = {"fault": {"type": "categorical", "choices": ["none", "nan", "oom"]}}
    spec = write_spec(space=space, budget={"num_trials": 4}, sampler={"type": "random", "seed": 1},
                      params=probe_params(tmp_path))
    code = main(["tune", str(spec)])
    out = capsys.readouterr().out
    _, children = sweep_runs(mlflow_uri)
    by_fault: dict[str, list] = {}
    for child in children:
        by_fault.setdefault(child.data.params.get("fault"), []).append(child)
    faulted = len(by_fault.get("oom", [])) + len(by_fault.get("nan", []))
    runs = mlflow_evidence(mlflow_uri)  # trials may share parameters here: one run per trial key
    fault_figures(faults_injected=faulted, mlflow_running=len(runs.running), duplicate_runs=runs.duplicates)
    assert code == 0
    assert set(by_fault) == {"none", "nan", "oom"}, "seed 1 should sample every fault"
    for run in by_fault["oom"]:
        assert run.info.status == "FAILED" and "MemoryError" in run.data.tags["raysweep.error"]
        assert f"failed trial {run.data.tags['raysweep.trial_id']}: " in out
    for run in by_fault["nan"]:
        assert run.info.status == "FAILED" and "non-finite" in run.data.tags["raysweep.error"]
    assert all(r.info.status == "FINISHED" for r in by_fault["none"])
    fault_figures(faults_survived=faulted)


@pytest.fixture
def own_ray_tmpdir():
    """A Ray temp dir of its own for a driver started in a subprocess (it starts its own
    in-process cluster): Ray keeps `ray_current_cluster` in its temp dir, and the shared
    test cluster's placement-group cleaners, which look their cluster up there, must not
    find this one (they would die, and trials' CPUs would never be given back). Short,
    for Ray's Unix socket paths."""
    path = tempfile.mkdtemp(prefix="rs-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _driver(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`python -m raysweep ...` in its own process group (its in-process Ray cluster too)."""
    return subprocess.Popen([sys.executable, "-m", "raysweep", *argv], cwd=REPO, env=env, start_new_session=True,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def _crash(driver: subprocess.Popen) -> None:
    """SIGKILL the driver, then what it started (its Ray processes die with the machine)."""
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    try:
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_killed_train_driver_resumes_from_checkpoint(ray_cluster, mlflow_uri, write_spec, tmp_path, fault_figures,
                                                     own_ray_tmpdir, probe_data):
    """Case 4: SIGKILL `raysweep train` after checkpoint 1; the same command again
    starts from it, ends with the uninterrupted metrics, in the same MLflow run."""
    spec = write_spec(params=probe_params(tmp_path, pause_epoch=2),
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 4})
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "RAYSWEEP_BASE_DIR": str(tmp_path),
           "RAY_TMPDIR": own_ray_tmpdir}
    driver = _driver(["train", str(spec)], env, tmp_path / "first.log")
    wait_for_pid(tmp_path / "probe" / "pause.pid")
    wait_for_epoch(mlflow_uri, 1)
    done = {e: (tmp_path / "probe" / f"train-rank0-epoch{e}.npy").stat().st_mtime_ns for e in (0, 1)}
    _crash(driver)
    killed_at = time.time()
    fault_figures(faults_injected=1)
    at_kill = checkpoint_evidence(train_folder(tmp_path), mlflow_uri)
    assert only_run(mlflow_uri).info.status == "RUNNING", "the crash left the run RUNNING"
    again = subprocess.run([sys.executable, "-m", "raysweep", "train", str(spec)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    fault_figures(**run_figures(mlflow_uri, train_folder(tmp_path), earlier=[at_kill], probe=tmp_path / "probe",
                                epochs=range(4), expected=probe_row_ids(probe_data / "train")))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    for epoch, mtime in done.items():
        assert (tmp_path / "probe" / f"train-rank0-epoch{epoch}.npy").stat().st_mtime_ns == mtime, \
            f"epoch {epoch} ran again"
    run = only_run(mlflow_uri)
    assert run.info.status == "FINISHED"
    change = max_rel_change(mlflow_uri, run.info.run_id, reference(spec, 4, tmp_path))
    fault_figures(metric_change=change)
    assert change <= 1e-6
    fault_figures(faults_survived=1, recovery_s=time.time() - killed_at)


def stored_journal(results: Path) -> str:
    """What a resume will start from: each trial of the sweep's Optuna journal (its
    raysweep id: state), for a diagnosis when the resumed sweep comes up short."""
    from raysweep.tracking.study import TUNE_TRIAL_ATTR

    lines = []
    for journal in sorted(results.glob("probe/*/optuna.journal")):
        try:
            study = load_study(str(journal.parent), "probe")
            lines.append(", ".join(f"{t.user_attrs.get(TUNE_TRIAL_ATTR)}: {t.state.name}" for t in study.trials))
        except Exception as exc:  # (a damaged journal is what this is for)
            lines.append(f"{journal}: unreadable ({type(exc).__name__}: {exc})")
    return "\n".join(lines) or "no journal"


# "s3": the sweep on the SeaweedFS bucket, the local run folder deleted before the
# resume (the searcher is rebuilt from the bucket's journal alone, see
# raysweep.driver.sweep._OptunaSearch).
@pytest.mark.parametrize("storage", ["local", "s3"])
def test_killed_sweep_driver_resumes_without_rerunning_trials(ray_cluster, mlflow_uri, write_spec, tmp_path,
                                                               fault_figures, own_ray_tmpdir, s3_server, storage):
    """Case 5: SIGKILL `raysweep tune` after two trials finished, then `--resume`: no
    finished trial runs again, 4 trials in all, the study has no stale RUNNING trial,
    MLflow has one parent and one child per trial, none RUNNING. With the sweep on
    `s3://`, the driver's local folder (its copy of the Optuna journal) is deleted
    before the resume: the study comes back from the bucket."""
    storage_path = f"s3://data/runs-{tmp_path.name}" if storage == "s3" else str(tmp_path / "results")
    spec = write_spec(params=probe_params(tmp_path, pause_epoch=1, pause_after_done=2), budget={
        "num_trials": 4, "max_concurrent_trials": 1}, sampler={"type": "random", "seed": 0},
        storage_path=storage_path)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "RAYSWEEP_BASE_DIR": str(tmp_path),
           "RAY_TMPDIR": own_ray_tmpdir}
    driver = _driver(["tune", str(spec)], env, tmp_path / "first.log")
    wait_for_pid(tmp_path / "probe" / "pause.pid")
    _crash(driver)
    killed_at = time.time()
    fault_figures(faults_injected=1)
    at_kill = checkpoint_evidence(tmp_path / "results", mlflow_uri)
    finished_before = sorted(p.name for p in (tmp_path / "probe").glob("done-*"))
    assert len(finished_before) == 2
    stored_at_kill = stored_journal(tmp_path / "results")
    if storage == "s3":  # the driver's disk is gone (a lost head node or pod)
        local = tmp_path / "results"
        assert (local / "probe").is_dir(), "the journal's local copy was there"
        shutil.rmtree(local)
    again = subprocess.run([sys.executable, "-m", "raysweep", "tune", str(spec), "--resume"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    done = {p.name: p.read_text().count("\n") for p in (tmp_path / "probe").glob("done-*")}
    reruns = sum(count - 1 for count in done.values())
    # The log-uniform lr never repeats: a trial run again under a new id shows as a duplicate too.
    fault_figures(trials_rerun=reruns, **run_figures(mlflow_uri, tmp_path / "results", earlier=[at_kill],
                                                     trials_by="params"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(done) == 4 and reruns == 0, f"{done}\nstored at the kill:\n{stored_at_kill}\n{again.stdout[-3000:]}"
    runs = experiment_runs(mlflow_uri)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 5, [r.info.run_name for r in runs]
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    (sweep_dir,) = [p for p in (tmp_path / "results" / "probe").iterdir() if p.is_dir()]
    if storage == "s3":  # the bucket's journal is the whole study, as the driver's copy
        from raysweep.data.storage import filesystem

        fs, path = filesystem(f"{storage_path}/probe/{sweep_dir.name}/optuna.journal")
        with fs.open_input_stream(path) as remote:
            assert remote.read() == (sweep_dir / "optuna.journal").read_bytes()
    study = load_study(str(sweep_dir), "probe")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 4, states
    fault_figures(faults_survived=1, recovery_s=time.time() - killed_at)


@pytest.fixture(autouse=True)
def _no_leftover_pause(tmp_path):
    yield
    (tmp_path / "probe").mkdir(parents=True, exist_ok=True)
    (tmp_path / "probe" / "go").touch()  # release any worker still waiting
