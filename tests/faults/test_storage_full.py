"""The disk a sweep writes to fills up mid-sweep (a small tmpfs as its storage_path,
mounted by the test as root and removed after): the sweep stops at the first trial that
could not write, in one line, resumable; with room again `--resume` finishes it."""

from __future__ import annotations

import os
import subprocess

import optuna
import pytest

from raysweep.cli import main
from raysweep.testing.helpers import probe_params, sweep_runs
from raysweep.tracking.study import load_study

NUM_TRIALS = 6


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk, and a way to give it room (remount larger)."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (the test machines and CI run as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)

    try:
        yield disk, grow
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_stops_the_sweep_in_one_line_and_resume_finishes_it(
        ray_cluster, mlflow_uri, write_spec, tmp_path, capsys, fault_figures, small_disk):
    """Each epoch's checkpoint carries 192 KiB of padding, so the third trial or so finds
    the 1 MiB disk full. Whichever write fails first, a trial's checkpoint (the sweep
    stops: `stopped: storage full: ...`) or the driver's own (the Optuna journal: `run
    failed: no space left on device (PATH)`), the command ends in one line with exit 1,
    no later trial is started to fail the same way, and `--resume` with room again
    finishes the sweep: every trial the journal has ends well but the one the disk
    stopped, if any."""
    disk, grow = small_disk
    storage = disk / "results"
    spec = write_spec(budget={"num_trials": NUM_TRIALS, "max_concurrent_trials": 1}, storage_path=str(storage),
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 2},
                      params=probe_params(tmp_path, pad_checkpoint_kb=192))
    code = main(["tune", str(spec)])
    out, err = capsys.readouterr()
    fault_figures(faults_injected=1)
    assert code == 1, out[-3000:] + err[-3000:]
    stopped = [line for line in out.splitlines() if " stopped: storage full: " in line]
    failed = [line for line in err.splitlines() if line.startswith("raysweep: run failed: no space left on device")]
    assert len(stopped) + len(failed) == 1, (out[-2000:], err[-2000:])
    (sweep_dir,) = [p for p in (storage / "probe").iterdir() if p.is_dir()]
    _, children = sweep_runs(mlflow_uri)
    full = [c for c in children if "No space left on device" in c.data.tags.get("raysweep.error", "")]
    assert len(full) <= 1 and len(children) < NUM_TRIALS, [(c.info.status, c.data.tags.get("raysweep.error"))
                                                            for c in children]

    grow()  # (room again)
    assert main(["tune", str(spec), "--resume", sweep_dir.name]) == 0
    out = capsys.readouterr().out
    assert " stopped: " not in out, out[-2000:]
    states = [t.state for t in load_study(str(sweep_dir), "probe").trials]
    assert len(states) == NUM_TRIALS and states.count(optuna.trial.TrialState.COMPLETE) >= NUM_TRIALS - 1, states
    assert (sweep_dir / "report" / "report.html").is_file()
    fault_figures(faults_survived=1)
