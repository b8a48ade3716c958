"""Issue 17, item 3: warm worker groups (`scaling.worker_group: warm`), on the shared
cluster, with the probe trainer (which logs every step of every rank with its pid).

- A sweep's 2-worker trials run on one group: the same two processes (rank 0 the
  reused trial process, rank 1 its worker actor) train every trial, every row once per
  epoch across ranks, equal batch counts, and trials the scheduler stops leave the
  group usable for the next.
- A rank-1 exception fails the trial with its cause in one line, as a Ray Train group.
- A SIGKILLed rank-1 process fails the trial; Tune retries it from its checkpoint on a
  new group and the sweep finishes.
"""

from __future__ import annotations

import inspect
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from raysweep.cli import main
from raysweep.testing import probe
from raysweep.testing.helpers import experiment_runs, probe_params, wait_for_pid
from raysweep.tracking import tags as tag

WARM = {"num_workers": 2, "cpus_per_worker": 0.5, "worker_group": "warm"}


def step_pids(probe: Path, rank: int) -> Counter[int]:
    """How many training steps each process of `rank` took (the probe's step log)."""
    return Counter(int(line.split()[0]) for line in (probe / f"steps-rank{rank}.log").read_text().splitlines())


def child_runs(mlflow_uri: str) -> list:
    return [r for r in experiment_runs(mlflow_uri) if "mlflow.parentRunId" in r.data.tags]


def test_trials_of_a_sweep_share_one_warm_group(ray_cluster, mlflow_uri, write_spec, tmp_path, capsys) -> None:
    spec = write_spec(scaling=WARM, budget={"num_trials": 6, "max_concurrent_trials": 1},
                      scheduler={"type": "asha", "metric": "val_loss", "mode": "min", "max_epochs": 3,
                                 "grace_period": 1, "reduction_factor": 2})
    assert main(["tune", str(spec)]) == 0
    out = capsys.readouterr().out
    probe = tmp_path / "probe"
    rank0, rank1 = step_pids(probe, 0), step_pids(probe, 1)
    assert len(rank0) == 1 and len(rank1) == 1 and set(rank0) != set(rank1), (rank0, rank1)
    assert sum(rank0.values()) == sum(rank1.values())  # every step on both ranks
    runs = child_runs(mlflow_uri)
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    epochs = [int(r.data.metrics["epochs_completed"]) for r in runs]
    assert 1 in epochs and 3 in epochs, epochs  # (stopped and finished trials, one group)
    assert "stopped early" in out
    for epoch in range(3):  # the last trial to run each epoch: every row once across ranks
        ids = [np.load(probe / f"train-rank{r}-epoch{epoch}.npy") for r in (0, 1)]
        assert sorted(np.concatenate(ids).tolist()) == list(range(203)) and not set(ids[0]) & set(ids[1])
        batches = [np.load(probe / f"batches-rank{r}-epoch{epoch}.npy") for r in (0, 1)]
        assert len(batches[0]) == len(batches[1])


def test_a_workers_exception_fails_the_trial_in_one_line(ray_cluster, mlflow_uri, write_spec, tmp_path,
                                                         capsys) -> None:
    spec = write_spec(scaling=WARM, budget={"num_trials": 1},
                      params=probe_params(tmp_path, fault="raise", fault_rank=1))
    assert main(["tune", str(spec)]) == 1
    line = next(i for i, text in enumerate(inspect.getsource(probe).splitlines(), start=1)
                if 'raise ValueError(f"planted failure' in text)
    want = f"rank 1: ValueError: planted failure on rank 1 (at raysweep.testing.probe:{line} in train)"
    assert f"FAILED: {want}\n" in capsys.readouterr().out
    (trial,) = child_runs(mlflow_uri)
    assert trial.data.tags[tag.ERROR] == want


def test_a_killed_worker_is_retried_on_a_new_group(ray_cluster, mlflow_uri, write_spec, tmp_path,
                                                   fault_figures) -> None:
    spec = write_spec(scaling=WARM, budget={"num_trials": 2, "max_concurrent_trials": 1},
                      failure={"max_failures": 1},
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 3},
                      params=probe_params(tmp_path, pause_epoch=1, pause_after_done=1))
    probe = tmp_path / "probe"
    code: list[int] = []
    sweep = threading.Thread(target=lambda: code.append(main(["tune", str(spec)])))
    sweep.start()
    try:
        wait_for_pid(probe / "pause.pid")  # trial 2, rank 0 at epoch 1; rank 1 waits in a collective
        (victim,) = step_pids(probe, 1)
        os.kill(victim, signal.SIGKILL)
        fault_figures(faults_injected=1)
    finally:
        time.sleep(0.5)
        (probe / "go").touch()
        sweep.join(timeout=300)
    runs = child_runs(mlflow_uri)
    fault_figures(trials_not_finished=sum(r.info.status != "FINISHED" for r in runs))
    assert code == [0]
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    assert len(step_pids(probe, 1)) == 2  # the retry's group has a new rank-1 process
    assert len(list(probe.glob("done-*"))) == 2
    fault_figures(faults_survived=1)


@pytest.fixture(autouse=True)
def _no_leftover_pause(tmp_path):
    yield
    (tmp_path / "probe").mkdir(parents=True, exist_ok=True)
    (tmp_path / "probe" / "go").touch()
