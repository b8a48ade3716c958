"""An elastic run (`scaling.num_workers: [1, 2]`) on a `cluster up` cluster of one
worker node: it starts on one worker, grows to two when a node joins, and shrinks back
to one when that node is killed, each change a restart from the latest mid-epoch
checkpoint; across the three parts of the epoch every row is trained on once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

from raysweep.testing.evidence import probe_row_ids, steps_by_attempt
from raysweep.testing.helpers import (
    experiment_runs,
    metric_series,
    only_run,
    probe_params,
    wait_for_epoch,
    wait_for_pid,
)
from tests.support.nodes import add_worker_node

WORKER_NODES = 1  # (the `nodes` fixture: head with no CPU + one 1-CPU worker node)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _wait_for_cursor(uri: str, world_size: int, timeout: float = 120) -> None:
    """Until the run's latest checkpoint (its raysweep.checkpoint tag, written as the
    driver registers each one) is a mid-epoch cursor saved by `world_size` ranks."""
    from raysweep.tracking import tags
    from raysweep.worker.checkpoint import load_state
    from raysweep.worker.context import CURSOR

    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = experiment_runs(uri)
        path = runs[0].data.tags.get(tags.CHECKPOINT) if runs else None
        if path:
            try:
                if load_state(path).get(CURSOR, {}).get("world_size") == world_size:
                    return
            except Exception:  # (pruned or being written meanwhile: read the next tag)
                pass
        time.sleep(0.2)
    raise AssertionError(f"no cursor checkpoint of {world_size} ranks registered in {timeout:.0f} s")


def test_an_elastic_run_grows_when_a_node_joins_and_shrinks_when_it_is_lost(
        nodes, write_spec, tmp_path, fault_figures, probe_data, mlflow_stores):
    _, state = nodes
    uri = mlflow_stores.new(tmp_path / "mlflow.db")
    probe = tmp_path / "probe"
    # Rank 0 pauses at epoch 1 before its second batch in every attempt, until PROBE/go:
    # each attempt's latest checkpoint is then the cursor after its first batch.
    spec = write_spec(params=probe_params(tmp_path, pause_epoch=1, pause_once=False, pause_s=300),
                      scaling={"num_workers": [1, 2], "elastic_check_s": 2}, checkpoint={"every_n_steps": 1},
                      failure={"max_failures": 2},
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 3})
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    driver = subprocess.Popen([sys.executable, "-m", "raysweep", "train", str(spec), "--address", state.address],
                              cwd=REPO, env=env, stdout=(tmp_path / "driver.log").open("w"),
                              stderr=subprocess.STDOUT)
    joined = None
    try:
        first = wait_for_pid(probe / "pause.pid")  # (one worker: the cluster has one CPU)
        wait_for_epoch(uri, 0)
        assert not (probe / "node-rank1.txt").exists()
        first_node = (probe / "node-rank0.txt").read_text()
        joined = add_worker_node(state, tmp_path / "joined.log")
        fault_figures(faults_injected=2)
        second = wait_for_pid(probe / "pause.pid", other_than=str(first))  # (grown: a new group, 2 ranks)
        (lost_rank,) = [r for r in (0, 1) if (probe / f"node-rank{r}.txt").read_text() != first_node]
        _wait_for_cursor(uri, world_size=2)  # (its first batch's checkpoint registered: what the shrink resumes)
        ranks = {r: steps_by_attempt(probe, r) for r in (0, 1)}
        assert ranks[1], "the grown group has no rank 1"
        worker_pid = int(list(ranks[lost_rank])[-1].split("#")[0]) if lost_rank else second
        os.killpg(joined, signal.SIGKILL)  # (the joined node taken away: its raylet and agents)
        os.killpg(os.getpgid(worker_pid), signal.SIGKILL)  # (and its worker)
        joined = None
        (probe / "go").touch()  # (the shrunk group trains on without pausing)
        code = driver.wait(timeout=400)
    finally:
        if joined is not None:
            os.killpg(joined, signal.SIGKILL)
        if driver.poll() is None:
            driver.kill()
    log = (tmp_path / "driver.log").read_text()
    assert code == 0, log[-3000:]
    run = only_run(uri)
    assert run.info.status == "FINISHED"
    sizes = [v for _, v in metric_series(uri, run.info.run_id, "system/world_size")]
    assert sizes == [1.0, 1.0, 1.0], sizes  # (epochs 0 and 2 on one worker; epoch 1 ended on one too)

    # Epoch 1 in three parts: one worker (its first batch), two (their first batch each),
    # one again (the rest); what each part kept is what its cursor says it took.
    attempts = {r: steps_by_attempt(probe, r) for r in (0, 1)}
    assert len(attempts[0]) == 3 and len(attempts[1]) == 1, {r: list(a) for r, a in attempts.items()}
    kept = [s for r in (0, 1) for steps in list(attempts[r].values())[:2 if r == 0 else 1]
            for s in steps if s.epoch == 1 and s.step < 1]
    kept += [s for s in list(attempts[0].values())[2] if s.epoch == 1]
    taken = Counter(i for s in kept for i in s.ids)
    fault_figures(rows_taken_twice=sum(1 for n in taken.values() if n > 1), faults_survived=2)
    assert set(taken) == probe_row_ids(probe_data / "train") and set(taken.values()) == {1}, taken.most_common(3)
