"""The stream loader on the shared Ray cluster, 2 workers: every row once per epoch,
equal batch counts, repeatable, and a SIGKILL mid-epoch resumed at the next batch
(both loaders) with no row taken twice or skipped."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from raysweep.cli import main
from raysweep.testing.evidence import run_figures
from raysweep.testing.helpers import only_run, probe_params, wait_for_pid

TRAIN_IDS, VALIDATION_IDS = set(range(203)), set(range(203, 264))  # write_probe_data's row ids
STREAM = {"loader": "stream", "shuffle_window_rows": 16, "prefetch_windows": 2, "read_threads": 2}


def data_section(probe_data: Path, **extra) -> dict:
    return {"train": str(probe_data / "train"), "validation": str(probe_data / "validation"),
            "features": ["row_id", "x*"], "label": "label", **extra}


def rows(probe: Path, split: str, rank: int, epoch: int) -> np.ndarray:
    return np.load(probe / f"{split}-rank{rank}-epoch{epoch}.npy")


def test_two_workers_stream_every_row_once_in_equal_batches_and_repeat(ray_cluster, mlflow_uri, write_spec,
                                                                        probe_data, tmp_path, capsys):
    spec = write_spec(data=data_section(probe_data, **STREAM), scaling={"num_workers": 2})
    assert main(["train", str(spec)]) == 0
    assert "data: stream loader: data.loader: stream" in capsys.readouterr().out
    run = only_run(mlflow_uri)
    assert run.data.tags["raysweep.data.loader"] == "stream"
    probe = tmp_path / "probe"
    first = {}
    for epoch in (0, 1):
        train = [rows(probe, "train", r, epoch) for r in (0, 1)]
        assert sorted(np.concatenate(train).tolist()) == sorted(TRAIN_IDS), f"epoch {epoch}: each row once"
        batches = [np.load(probe / f"batches-rank{r}-epoch{epoch}.npy") for r in (0, 1)]
        assert len(batches[0]) == len(batches[1]) == 7 and all(b.min() > 0 for b in batches)
        validation = np.concatenate([rows(probe, "val", r, epoch) for r in (0, 1)])
        assert sorted(validation.tolist()) == sorted(VALIDATION_IDS)
        first[epoch] = train
    assert not (first[0][0] == first[1][0][: len(first[0][0])]).all(), "each epoch has its own order"
    again = write_spec("again.yaml", data=data_section(probe_data, **STREAM), scaling={"num_workers": 2},
                       params=probe_params(tmp_path / "again"))
    assert main(["train", str(again), "--name", "again"]) == 0
    for epoch in (0, 1):
        for rank in (0, 1):
            assert (rows(tmp_path / "again" / "probe", "train", rank, epoch) == first[epoch][rank]).all()


def steps_by_attempt(probe: Path, rank: int, epoch: int) -> list[list[tuple[int, list[int]]]]:
    """The probe's step log for one rank and epoch, split by attempt (process id), in order."""
    attempts: dict[str, list[tuple[int, list[int]]]] = {}
    for line in (probe / f"steps-rank{rank}.log").read_text().splitlines():
        pid, line_epoch, step, ids = line.split(" ")
        if int(line_epoch) == epoch:
            attempts.setdefault(pid, []).append((int(step), [int(i) for i in ids.split(",")]))
    return list(attempts.values())


@pytest.mark.parametrize("loader", ["stream", "memory"])
def test_sigkill_mid_epoch_resumes_at_the_next_batch(ray_cluster, mlflow_uri, write_spec, probe_data, tmp_path,
                                                     loader, fault_figures):
    """Rank 0 is killed before its 5th batch of epoch 1 (a checkpoint was taken after
    step 4); the restarted group continues at step 4: across both attempts, the
    steps before the checkpoint plus the resumed ones take every row once."""
    spec = write_spec(data=data_section(probe_data, **{**STREAM, "loader": loader}), scaling={"num_workers": 2},
                      checkpoint={"every_n_steps": 2}, failure={"max_failures": 1},
                      params=probe_params(tmp_path, pause_epoch=1, pause_step=5),
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 2})
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", main(["train", str(spec)])), daemon=True)
    thread.start()
    pid = wait_for_pid(tmp_path / "probe" / "pause.pid")
    time.sleep(2)  # Train's controller registers a reported checkpoint at its next poll (every 0.5 s)
    os.kill(pid, signal.SIGKILL)
    fault_figures(faults_injected=1)
    thread.join(timeout=400)
    # Rows each epoch's model trained on, from both ranks' step logs (a killed attempt's
    # steps up to the checkpoint the next one resumed from), before any assertion.
    fault_figures(**run_figures(mlflow_uri, tmp_path / "results" / "probe" / "probe-train", probe=tmp_path / "probe",
                                ranks=(0, 1), epochs=(0, 1), expected=TRAIN_IDS, rows_from="steps"))
    assert result.get("code") == 0
    assert only_run(mlflow_uri).info.status == "FINISHED"
    committed: list[int] = []
    for rank in (0, 1):
        attempts = steps_by_attempt(tmp_path / "probe", rank, epoch=1)
        assert len(attempts) == 2, f"rank {rank}: one attempt killed, one resumed"
        killed, resumed = attempts
        assert resumed[0][0] == 4, f"rank {rank} resumed at step {resumed[0][0]}, not at the checkpoint's 4"
        assert [s for s, _ in resumed] == list(range(4, 7))
        committed += [i for step, ids in killed if step < 4 for i in ids] + [i for _, ids in resumed for i in ids]
    assert sorted(committed) == sorted(TRAIN_IDS), "every row of the interrupted epoch once"
    fault_figures(faults_survived=1)
