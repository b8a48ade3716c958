"""Faults across hosts that share nothing, during a sweep (slow: scripts/faults.sh).

The head host is killed with every process on it and its disk wiped while a sweep
submitted from the laptop runs; a new head comes up on the same address (`cluster up`
again), and `submit --resume` finds the sweep in the bucket (Tune's state and the Optuna
journal under storage_path) and finishes it. Nothing is lost and no finished trial runs
again. The S3 and tracking servers each stop answering for 20 s. A worker host is cut
off the network (node loss): its trial retries on the other host. A worker host gets a
drain notice and is powered off at its deadline (a spot reclaim): its trial checkpoints
at once and moves, spending no failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from support.onprem import RAYSWEEP, Cluster, missing, onprem_cluster, wait_nodes  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=missing() or "")]
NUM_TRIALS, EPOCHS = 4, 4
DRAIN_DEADLINE_S = 8
OVERRIDES = ["data.train=s3://data/digits/train", "data.validation=s3://data/digits/validation",
             "storage_path=s3://runs/sweeps", f"budget.num_trials={NUM_TRIALS}",
             f"scheduler.max_epochs={EPOCHS}", f"scheduler.grace_period={EPOCHS}", "failure.max_failures=1"]


@pytest.fixture
def onprem(tmp_path: Path, isolated_home: Path) -> Iterator[Cluster]:
    with onprem_cluster(tmp_path / "onprem") as cluster:
        yield cluster


def _submit(cluster: Cluster, *extra: str) -> list[str]:
    args = [RAYSWEEP, "submit", "search_spaces/digits_mlp.yaml", "--cluster", cluster.profile, *extra]
    for item in OVERRIDES:
        args += ["--set", item]
    return args


def _trials(cluster: Cluster) -> list:
    import mlflow

    client = mlflow.MlflowClient(cluster.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("digits-mlp")
    if experiment is None:
        return []
    return [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]


def test_head_lost_with_its_disk_then_resumed_from_the_bucket(onprem: Cluster, fault_figures) -> None:
    import mlflow

    os.environ.update({k: onprem.env[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
    first = subprocess.Popen(_submit(onprem, "--timeout", "900"), cwd=onprem.project, env=onprem.env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not any(r.info.status == "FINISHED" for r in _trials(onprem)):
        assert first.poll() is None, f"the sweep ended before the fault:\n{first.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no trial finished within 600 s"
        time.sleep(2)
    finished_before = {r.info.run_id for r in _trials(onprem) if r.info.status == "FINISHED"}
    head = onprem.hosts[0]
    onprem.hosts.kill(head)  # power: every process of the head, its sshd too
    onprem.hosts.wipe(head)  # and a new disk
    os.killpg(first.pid, signal.SIGKILL)  # (the laptop's `submit` lost its job with the head)
    first.wait()
    before = [ln for ln in first.stdout.read().splitlines() if ln.startswith("[")]
    fault_figures(faults_injected=1)

    onprem.hosts.boot(head)
    onprem.hosts.wait_ssh(head)
    onprem.raysweep("cluster", "up", onprem.profile)
    wait_nodes(onprem, 3)
    onprem.connect()
    resumed = onprem.raysweep(*_submit(onprem, "--resume", "--timeout", "900")[1:], timeout=1000).stdout

    client = mlflow.MlflowClient(onprem.env["MLFLOW_TRACKING_URI"])
    trials = _trials(onprem)
    keys = [r.data.tags.get("raysweep.key") for r in trials]
    duplicates = len(keys) - len(set(keys))
    rerun = [r.info.run_id for r in trials if r.info.run_id in finished_before
             and len(client.get_metric_history(r.info.run_id, "val_loss")) > EPOCHS]
    finished = [r for r in trials if r.info.status == "FINISHED"]
    fault_figures(faults_survived=int(len(finished) == NUM_TRIALS and not rerun and not duplicates),
                  trials_rerun=len(rerun), duplicate_runs=duplicates, trials_not_finished=NUM_TRIALS - len(finished))
    said = [ln for ln in resumed.splitlines() if ln.startswith(("journal:", "resuming", "[")) or "  " in ln]
    assert len(finished) == NUM_TRIALS, ("\n".join(before[-30:] + ["-- resumed --"] + said)[-8000:],
                                         [(r.info.run_name, r.info.status, r.data.tags.get("raysweep.key"))
                                          for r in trials])
    assert not duplicates and not rerun, (duplicates, rerun)


def _pause(pgid: int, seconds: float) -> None:
    """A server that stops answering (SIGSTOP to its process group), then comes back."""
    os.killpg(pgid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.killpg(pgid, signal.SIGCONT)


def test_storage_and_tracking_each_stopped_for_20_s_mid_sweep(onprem: Cluster, fault_figures) -> None:
    """The S3 server (data, checkpoints, Tune's state, the journal), then the tracking
    server, each stop answering for 20 s while trials train on the hosts: the sweep
    finishes and every epoch's metrics arrive."""
    import mlflow

    os.environ.update({k: onprem.env[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
    sweep = subprocess.Popen(_submit(onprem, "--timeout", "900"), cwd=onprem.project, env=onprem.env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    client = mlflow.MlflowClient(onprem.env["MLFLOW_TRACKING_URI"])
    deadline = time.monotonic() + 600
    while not any(client.get_metric_history(r.info.run_id, "val_loss") for r in _trials(onprem)):
        assert sweep.poll() is None, f"the sweep ended before the fault:\n{sweep.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no epoch reported within 600 s"
        time.sleep(1)
    _pause(onprem.s3.pgid, 20)  # type: ignore[attr-defined]
    _pause(onprem.mlflow.server._proc.pid, 20)  # type: ignore[attr-defined]  # (its own process group)
    fault_figures(faults_injected=2)
    out, _ = sweep.communicate(timeout=1000)
    trials = _trials(onprem)
    epochs = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "val_loss")) for r in trials}
    finished = [r for r in trials if r.info.status == "FINISHED"]
    complete = sum(1 for n in epochs.values() if n == EPOCHS)
    fault_figures(faults_survived=2 * int(sweep.returncode == 0 and complete == NUM_TRIALS),
                  trials_not_finished=NUM_TRIALS - len(finished), trials_missing_epochs=NUM_TRIALS - complete)
    assert sweep.returncode == 0, out[-4000:]
    assert len(finished) == NUM_TRIALS and complete == NUM_TRIALS, (epochs, out[-3000:])


def test_a_worker_host_cut_off_mid_sweep_its_trial_retries_on_the_other(onprem: Cluster, fault_figures) -> None:
    """A worker host's network unplugged while trials train on both worker hosts (its
    processes live on, unreachable): Ray declares the node dead, the trial that was on
    it fails once and is retried on the other host from its latest checkpoint
    (failure.max_failures=1). The sweep finishes: every trial FINISHED with every
    epoch's metrics, one MLflow run per trial."""
    import mlflow

    os.environ.update({k: onprem.env[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
    sweep = subprocess.Popen(_submit(onprem, "--timeout", "900"), cwd=onprem.project, env=onprem.env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    client = mlflow.MlflowClient(onprem.env["MLFLOW_TRACKING_URI"])
    deadline = time.monotonic() + 600
    # Two trials train at once, one on each worker host (1 CPU each, the head none).
    while sum(bool(client.get_metric_history(r.info.run_id, "val_loss")) for r in _trials(onprem)) < 2:
        assert sweep.poll() is None, f"the sweep ended before the fault:\n{sweep.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "two trials did not report an epoch within 600 s"
        time.sleep(1)
    onprem.hosts.cut(onprem.hosts[2])
    fault_figures(faults_injected=1)
    out, _ = sweep.communicate(timeout=1000)
    trials = _trials(onprem)
    epochs = {r.info.run_id: sorted({m.step for m in client.get_metric_history(r.info.run_id, "val_loss")})
              for r in trials}
    keys = [r.data.tags.get("raysweep.key") for r in trials]
    finished = [r for r in trials if r.info.status == "FINISHED"]
    complete = sum(1 for steps in epochs.values() if steps == list(range(EPOCHS)))
    duplicates = len(keys) - len(set(keys))
    retried = [r.data.tags.get("raysweep.key") for r in trials if r.data.tags.get("raysweep.failures") == "1"]
    fault_figures(faults_survived=int(sweep.returncode == 0 and complete == NUM_TRIALS and not duplicates
                                      and len(retried) == 1),
                  trials_not_finished=NUM_TRIALS - len(finished), trials_missing_epochs=NUM_TRIALS - complete,
                  duplicate_runs=duplicates)
    assert sweep.returncode == 0, out[-4000:]
    assert len(trials) == NUM_TRIALS and not duplicates, keys
    assert len(finished) == NUM_TRIALS and complete == NUM_TRIALS, (epochs, out[-3000:])
    # The trial that was on the cut host failed once (the node's loss) and ran again.
    assert len(retried) == 1 and "retrying from its latest checkpoint (failure 1)" in out, out[-4000:]


def _node_id(cluster: Cluster, host) -> str:
    """The Ray node id of `host`'s raylet, asked on the head."""
    answer = cluster.hosts.ssh(cluster.hosts[0], (
        "cd / && timeout 60 python -c \"import ray; ray.init(address='auto', logging_level='ERROR'); "
        "print('node', *[n['NodeID'] for n in ray.nodes() "
        f"if n['Alive'] and n['NodeManagerAddress'] == '{host.ip}'])\""),
        timeout=90)
    (line,) = [line for line in answer.stdout.splitlines() if line.startswith("node ")]
    (node,) = line.split()[1:]
    return node


def test_a_worker_host_drained_mid_sweep_its_trial_moves_without_spending_a_failure(
        onprem: Cluster, fault_figures) -> None:
    """A spot reclaim: `ray drain-node --reason PREEMPTION` for a worker host while
    trials train on both worker hosts, then the host powered off at the deadline. The
    trial on it saves a just-in-time checkpoint and takes no more batches; Tune runs it
    again on the other host from that checkpoint without counting a failure
    (failure.max_failures=0 here: a counted failure would end it). Every trial
    FINISHED with every epoch, one MLflow run each, none with raysweep.failures, and
    the sweep says one trial moved."""
    import mlflow

    os.environ.update({k: onprem.env[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
    args = [a if a != "failure.max_failures=1" else "failure.max_failures=0"
            for a in _submit(onprem, "--timeout", "900")]
    sweep = subprocess.Popen(args, cwd=onprem.project, env=onprem.env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    client = mlflow.MlflowClient(onprem.env["MLFLOW_TRACKING_URI"])
    deadline = time.monotonic() + 600
    while sum(bool(client.get_metric_history(r.info.run_id, "val_loss")) for r in _trials(onprem)) < 2:
        assert sweep.poll() is None, f"the sweep ended before the fault:\n{sweep.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "two trials did not report an epoch within 600 s"
        time.sleep(1)
    host = onprem.hosts[2]
    onprem.hosts.ssh(onprem.hosts[0], (
        f"cd / && ray drain-node --address {onprem.hosts[0].ip}:6379 --node-id {_node_id(onprem, host)} "
        f"--reason DRAIN_NODE_REASON_PREEMPTION --reason-message 'spot reclaim (test)' "
        f"--deadline-remaining-seconds {DRAIN_DEADLINE_S}"), timeout=90)
    drained_at = time.monotonic()
    fault_figures(faults_injected=1)
    time.sleep(max(0.0, drained_at + DRAIN_DEADLINE_S + 1 - time.monotonic()))
    onprem.hosts.kill(host)  # (the cloud takes the machine away at the deadline)
    out, _ = sweep.communicate(timeout=1000)
    trials = _trials(onprem)
    epochs = {r.info.run_id: sorted({m.step for m in client.get_metric_history(r.info.run_id, "val_loss")})
              for r in trials}
    keys = [r.data.tags.get("raysweep.key") for r in trials]
    finished = [r for r in trials if r.info.status == "FINISHED"]
    complete = sum(1 for steps in epochs.values() if steps == list(range(EPOCHS)))
    duplicates = len(keys) - len(set(keys))
    failed = [r.data.tags.get("raysweep.key") for r in trials if "raysweep.failures" in r.data.tags]
    preempted = [r.data.tags.get("raysweep.key") for r in trials if r.data.tags.get("raysweep.preemptions") == "1"]
    moved = out.count("its node was taken away")
    fault_figures(faults_survived=int(sweep.returncode == 0 and complete == NUM_TRIALS and not duplicates
                                      and not failed and moved == 1),
                  trials_not_finished=NUM_TRIALS - len(finished), trials_missing_epochs=NUM_TRIALS - complete,
                  duplicate_runs=duplicates, failures_spent=len(failed))
    assert sweep.returncode == 0, out[-4000:]
    assert len(trials) == NUM_TRIALS and not duplicates, keys
    assert len(finished) == NUM_TRIALS and complete == NUM_TRIALS, (epochs, out[-3000:])
    assert not failed and moved == 1 and "not counted in failure.max_failures" in out, out[-4000:]
    assert len(preempted) == 1 and "drain notice, checkpointed" in out, (preempted, out[-4000:])
