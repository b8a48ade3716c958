"""Graceful preemption on a real multi-node cluster: a drain notice on the node a run's
worker is on (`ray drain-node --reason PREEMPTION` with a deadline, what a cloud
autoscaler sends before it takes a spot node away).

The module's own cluster (the `nodes` fixture: head without CPUs + 3 one-CPU worker
nodes): a drained node stays drained (or is taken away), so no other module shares it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from raysweep.cluster.local import cluster_env
from raysweep.testing.evidence import checkpoint_evidence, probe_row_ids, run_figures, steps_by_attempt
from raysweep.testing.helpers import (
    max_rel_change,
    only_run,
    probe_params,
    reference,
    sweep_runs,
    wait_for_pid,
)
from raysweep.tracking import tags
from raysweep.worker.drain import POLL_S
from tests.support.nodes import add_worker_node, alive_nodes, node_group_of, wait_alive_nodes

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 8
WORKER_NODES = 3  # (the first case leaves one drained; the second takes one away)


def test_drained_node_run_checkpoints_at_once_and_moves_without_spending_failures(
        nodes, write_spec, tmp_path, fault_figures, probe_data, mlflow_stores):
    """Drain notice mid-epoch (epoch 1, after its first batch): the worker saves a
    mid-epoch checkpoint at the next step and takes no further batch; at the deadline
    Ray Train restarts the group on the other node from it. With max_failures=0 any
    counted failure would end the run: it finishes, every row of epoch 1 was trained
    on exactly once across both attempts, val_loss equals an uninterrupted run's, and
    the run's MLflow tags say it was preempted."""
    _, state = nodes
    uri = mlflow_stores.new(tmp_path / "mlflow.db")
    spec = write_spec(params=probe_params(tmp_path, pause_epoch=1, pause_until_drained=True, pause_s=120),
                      failure={"max_failures": 0},
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 3})
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    driver = subprocess.Popen([sys.executable, "-m", "raysweep", "train", str(spec), "--address", state.address],
                              cwd=REPO, env=env, stdout=(tmp_path / "driver.log").open("w"),
                              stderr=subprocess.STDOUT)
    wait_for_pid(tmp_path / "probe" / "pause.pid")
    first_node = (tmp_path / "probe" / "node-rank0.txt").read_text()
    drain_node(state, first_node)
    drained_at = time.time()
    fault_figures(faults_injected=1)
    folder = tmp_path / "results" / "probe" / "probe-train"
    at_drain = checkpoint_evidence(folder, uri)
    code = driver.wait(timeout=400)
    log = (tmp_path / "driver.log").read_text()
    fault_figures(**run_figures(uri, folder, earlier=[at_drain], probe=tmp_path / "probe", epochs=range(3),
                                expected=probe_row_ids(probe_data / "train"), rows_from="steps"))
    assert code == 0, log[-3000:]
    assert (tmp_path / "probe" / "node-rank0.txt").read_text() != first_node, "did not move off the drained node"

    # Every row of the interrupted epoch trained on once, counting the steps of both attempts.
    attempts = steps_by_attempt(tmp_path / "probe", 0)
    assert len(attempts) == 2, list(attempts)
    taken = Counter(r for steps in attempts.values() for s in steps if s.epoch == 1 for r in s.ids)
    fault_figures(rows_taken_twice=sum(1 for n in taken.values() if n > 1))
    assert set(taken) == probe_row_ids(probe_data / "train") and set(taken.values()) == {1}, taken.most_common(3)
    first, second = attempts.values()
    resumed_at = [s for s in second if s.epoch == 1][0].step
    assert resumed_at == max(s.step for s in first if s.epoch == 1) + 1, "resumed at the batch after the last one"

    run = only_run(uri)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tags.PREEMPTIONS] == "1"
    assert run.data.tags[tags.PREEMPTED_AT].startswith(f"epoch 1 step {resumed_at}: drain notice")
    # val_loss: the weights equal an uninterrupted run's (the probe's epoch-1 train_loss
    # averages only the resumed attempt's steps: its running sum is not checkpointed).
    change = max_rel_change(uri, run.info.run_id, reference(spec, 3, tmp_path), metrics=("val_loss",))
    fault_figures(metric_change=change)
    assert change <= 1e-6
    fault_figures(faults_survived=1, recovery_s=time.time() - drained_at)


def drain_node(state, node_id: str) -> None:
    """What a cloud autoscaler sends before it takes a spot node away."""
    drain = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "drain-node", "--address", state.address, "--node-id", node_id,
         "--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot reclaim (test)",
         "--deadline-remaining-seconds", str(DEADLINE_S)],
        env=cluster_env(state), capture_output=True, text=True, timeout=60)
    assert drain.returncode == 0, drain.stdout + drain.stderr


def test_a_sweep_trial_on_a_drained_node_checkpoints_and_moves_without_spending_failures(
        nodes, write_spec, tmp_path, fault_figures, probe_data, mlflow_stores):
    """A one-worker sweep trial trains in its Tune trial's own process (no Train worker
    group, no Train preemption watcher). Drain notice mid-epoch 1; at the deadline the
    node is taken away (its processes get SIGTERM, as a cloud's shutdown sends). With
    max_failures=0 any counted failure would end the trial: it finishes on another
    node, every row of epoch 1 trained on once across both attempts, val_loss equals an
    uninterrupted run's, the trial's MLflow run says it was preempted (and not failed),
    and the sweep's console says the trial moved."""
    _, state = nodes
    uri = mlflow_stores.new(tmp_path / "mlflow.db")
    spec = write_spec(params=probe_params(tmp_path, pause_epoch=1, pause_until_drained=True, pause_s=120),
                      space={"lr": {"type": "categorical", "choices": [0.1]}},
                      budget={"num_trials": 1}, failure={"max_failures": 0},
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 3})
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    driver = subprocess.Popen([sys.executable, "-m", "raysweep", "tune", str(spec), "--address", state.address],
                              cwd=REPO, env=env, stdout=(tmp_path / "driver.log").open("w"),
                              stderr=subprocess.STDOUT)
    pid = wait_for_pid(tmp_path / "probe" / "pause.pid")
    first_node = (tmp_path / "probe" / "node-rank0.txt").read_text()
    group = node_group_of(pid, state.pids[1:])
    drain_node(state, first_node)
    drained_at = time.time()
    fault_figures(faults_injected=1)
    folder = tmp_path / "results" / "probe"
    at_drain = checkpoint_evidence(folder, uri)
    time.sleep(max(0.0, drained_at + DEADLINE_S + 1 - time.time()))
    os.killpg(group, signal.SIGTERM)  # (the cloud takes the node away at the deadline)
    code = driver.wait(timeout=400)
    log = (tmp_path / "driver.log").read_text()
    fault_figures(**run_figures(uri, folder, earlier=[at_drain], probe=tmp_path / "probe", epochs=range(3),
                                expected=probe_row_ids(probe_data / "train"), rows_from="steps"))
    assert code == 0, log[-3000:]
    assert (tmp_path / "probe" / "node-rank0.txt").read_text() != first_node, "did not move off the drained node"
    assert "its node was taken away" in log and "a preemption, not counted in failure.max_failures" in log, log[-3000:]

    attempts = steps_by_attempt(tmp_path / "probe", 0)
    assert len(attempts) == 2, list(attempts)
    taken = Counter(r for steps in attempts.values() for s in steps if s.epoch == 1 for r in s.ids)
    fault_figures(rows_taken_twice=sum(1 for n in taken.values() if n > 1))
    assert set(taken) == probe_row_ids(probe_data / "train") and set(taken.values()) == {1}, taken.most_common(3)
    first, second = attempts.values()
    resumed_at = [s for s in second if s.epoch == 1][0].step
    assert resumed_at == max(s.step for s in first if s.epoch == 1) + 1, "resumed at the batch after the last one"

    _, (trial,) = sweep_runs(uri)
    assert trial.info.status == "FINISHED"
    assert trial.data.tags[tags.PREEMPTIONS] == "1" and tags.FAILURES not in trial.data.tags
    assert trial.data.tags[tags.PREEMPTED_AT].startswith(f"epoch 1 step {resumed_at}: drain notice")
    change = max_rel_change(uri, trial.info.run_id, reference(spec, 3, tmp_path), metrics=("val_loss",))
    fault_figures(metric_change=change)
    assert change <= 1e-6
    fault_figures(faults_survived=1, recovery_s=time.time() - drained_at)


def test_a_warm_group_trial_whose_worker_node_is_drained_moves_without_spending_failures(
        nodes, write_spec, tmp_path, fault_figures, probe_data, mlflow_stores):
    """`scaling.worker_group: warm`, two ranks on two one-CPU nodes (rank 0 in the Tune
    trial's own process, rank 1 a worker actor). Drain notice for rank 1's node (not the
    trial's own) mid-epoch 1: the ranks agree on it, save a checkpoint at once and take
    no more batches; at the deadline the node is taken away, rank 1 dies with Ray's
    preempted actor error, and Tune runs the trial again from that checkpoint on a new
    group. With max_failures=0 a counted failure would end the trial: it finishes, rank
    1 moved, every row of epoch 1 was trained on once across the attempts and ranks,
    and the trial's MLflow run says it was preempted (and not failed)."""
    _, state = nodes
    probe = tmp_path / "probe"
    added: list[int] = []
    uri = mlflow_stores.new(tmp_path / "mlflow.db")
    spec = write_spec(params=probe_params(tmp_path, pause_epoch=1, pause_s=120),
                      space={"lr": {"type": "categorical", "choices": [0.1]}},
                      budget={"num_trials": 1}, failure={"max_failures": 0},
                      scaling={"num_workers": 2, "cpus_per_worker": 1, "worker_group": "warm"},
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 3})
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    driver = None
    try:
        for i in range(2):  # (room for the group and its move; one at a time: two raylets starting at once
            # on this machine time out; and the driver must not count too few CPUs for two workers and refuse)
            before = alive_nodes(state)
            added.append(add_worker_node(state, tmp_path / f"node-{i}.log"))
            wait_alive_nodes(state, before + 1)
        driver = subprocess.Popen([sys.executable, "-m", "raysweep", "tune", str(spec), "--address", state.address],
                                  cwd=REPO, env=env, stdout=(tmp_path / "driver.log").open("w"),
                                  stderr=subprocess.STDOUT)
        wait_for_pid(probe / "pause.pid")  # (rank 0, before its first batch of epoch 1; rank 1 waits on it)
        rank1_node = (probe / "node-rank1.txt").read_text()
        assert rank1_node != (probe / "node-rank0.txt").read_text(), "both ranks on one node"
        (rank1_pid,) = {int(p.name.split("pid")[1].split(".")[0]) for p in probe.glob("modules-rank1-pid*.txt")}
        group = node_group_of(rank1_pid, [*state.pids[1:], *added])
        drain_node(state, rank1_node)
        drained_at = time.time()
        # (rank 1's watcher asks Ray every second; the ranks agree every 4 steps, and the
        # epoch has 6 more: let rank 1 see the notice before rank 0 takes its next batch)
        time.sleep(2.5 * POLL_S)
        (probe / "go").touch()
        fault_figures(faults_injected=1)
        time.sleep(max(0.0, drained_at + DEADLINE_S + 1 - time.time()))
        os.killpg(group, signal.SIGTERM)  # (the cloud takes the node away at the deadline)
        code = driver.wait(timeout=400)
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        for node in added:
            try:
                os.killpg(node, signal.SIGKILL)
            except ProcessLookupError:
                pass
    log = (tmp_path / "driver.log").read_text()
    assert code == 0, log[-3000:]
    assert "a preemption, not counted in failure.max_failures" in log, log[-3000:]
    assert (probe / "node-rank1.txt").read_text() != rank1_node, "rank 1 did not move off the drained node"

    # Epoch 1: what the first attempt took before its checkpoint, then the second attempt's rest.
    attempts = {r: list(steps_by_attempt(probe, r).values()) for r in (0, 1)}
    assert [len(a) for a in attempts.values()] == [2, 2], {r: len(a) for r, a in attempts.items()}
    resumed_at = min(s.step for r in (0, 1) for s in attempts[r][1] if s.epoch == 1)
    assert resumed_at > 0, "the second attempt did not resume mid-epoch from the drain checkpoint"
    taken = Counter(i for r in (0, 1) for s in attempts[r][0] if s.epoch == 1 and s.step < resumed_at
                    for i in s.ids)
    taken.update(i for r in (0, 1) for s in attempts[r][1] if s.epoch == 1 for i in s.ids)
    fault_figures(rows_taken_twice=sum(1 for n in taken.values() if n > 1))
    assert set(taken) == probe_row_ids(probe_data / "train") and set(taken.values()) == {1}, taken.most_common(3)

    _, (trial,) = sweep_runs(uri)
    assert trial.info.status == "FINISHED"
    assert trial.data.tags[tags.PREEMPTIONS] == "1" and tags.FAILURES not in trial.data.tags
    assert trial.data.tags[tags.PREEMPTED_AT].startswith(f"epoch 1 step {resumed_at}: drain notice")
    fault_figures(faults_survived=1, recovery_s=time.time() - drained_at)
