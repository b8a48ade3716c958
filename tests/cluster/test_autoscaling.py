"""A sweep on an autoscaling cluster (issue 14): Ray's fake multi-node autoscaler on
this machine (`tests.support.autoscaler`), a head with no CPU and a worker node type
of 1 CPU (and a custom resource), at most 2 nodes, none up at the start.

The sweep joins it with a profile that describes those node types, so its concurrency
is what the node types' maximum counts hold (2), not what is up (0 CPUs). Its pending
trials make the autoscaler start the nodes, and the nodes go away once idle.

The cluster is this module's own (temp folder, token, ports, all on 127.0.0.1) and
separate from the session's in-process one: everything that talks to it runs in a
subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raysweep.cluster.sockets import listening
from raysweep.config.profile import load_profile
from raysweep.config.spec import BudgetSpec, ScalingSpec
from raysweep.driver.plan import max_concurrent_trials
from raysweep.testing.helpers import experiment_runs
from tests.support.autoscaler import FakeAutoscalingCluster, WorkerType, peak_overlap, watching

REPO = Path(__file__).resolve().parents[2]
NUM_TRIALS = 4
PAUSE_S = 10
"""Each trial waits this long in its first epoch (the probe trainer's pause): long
enough that two trials overlap once both nodes are up."""
IDLE_TIMEOUT_S = 20.0
SCALE_DOWN_WITHIN_S = 60.0


@pytest.fixture(scope="module")
def autoscaling(tmp_path_factory):
    """(cluster, profile path): the cluster up with no worker node; stopped after."""
    cluster = FakeAutoscalingCluster(
        {"cpu_worker": WorkerType({"CPU": 1, "autoscaled": 1}, max_workers=2)},
        head_cpus=0, idle_timeout_s=IDLE_TIMEOUT_S, name="fake-autoscaling")
    with cluster:
        profile = tmp_path_factory.mktemp("autoscaling") / "autoscaling.yaml"
        profile.write_text(yaml.safe_dump(cluster.profile()))
        yield cluster, profile
        cluster.save_logs(profile.parent / "logs")
    assert not cluster.processes(), "the autoscaling cluster left processes running"
    assert not cluster.root.exists(), "the autoscaling cluster left its temp folder"


def _tune(spec: Path, profile: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raysweep", "tune", str(spec), "--cluster", str(profile),
                           "--no-report", *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


def test_sweep_scales_the_cluster_up_to_its_cap_and_back_down(autoscaling, write_spec, tmp_path, fault_figures,
                                                             mlflow_stores):
    cluster, profile = autoscaling
    uri = mlflow_stores.new(tmp_path / "mlflow.db")
    env = {**cluster.env(), "MLFLOW_TRACKING_URI": uri}
    spec = write_spec(budget={"num_trials": NUM_TRIALS, "max_concurrent_trials": NUM_TRIALS},
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 1})
    raw = yaml.safe_load(spec.read_text())
    raw["params"].update(pause_epoch=0, pause_once=False, pause_s=PAUSE_S)
    spec.write_text(yaml.safe_dump(raw))
    # The cap, as the sweep computes it from the profile: 2 one-CPU nodes at most.
    cap = max_concurrent_trials(ScalingSpec.model_validate(raw["scaling"]), BudgetSpec.model_validate(raw["budget"]),
                                load_profile(profile).max_capacity()["CPU"], 0.0)
    assert cap == 2

    with watching(cluster, tmp_path / "nodes.jsonl") as watcher:
        before = watcher.wait_for(lambda s: len(s) >= 2, 120)
        assert before and max(n for _, n in before) == 0, "worker nodes were up before the sweep"
        run = _tune(spec, profile, env)
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
        samples = watcher.wait_for(lambda s: s[-1][1] == 0 and max(n for _, n in s) > 0, SCALE_DOWN_WITHIN_S)
        beyond_loopback = [item.bind for item in listening(cluster.processes()) if not item.loopback]
    assert "cluster: autoscaling fake-autoscaling: sized for its node types at their maximum counts (2 CPUs" \
        in run.stdout, run.stdout[-2000:]

    runs = experiment_runs(uri)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    print(run.stdout[-4000:])  # (shown when a check below fails)
    for r in trials:
        print(r.info.run_name, r.info.status, r.data.tags.get("raysweep.error", ""))
    assert len(trials) == NUM_TRIALS and all(r.info.status == "FINISHED" for r in runs)
    sweep_start, sweep_end = parent.info.start_time / 1000, parent.info.end_time / 1000
    spans = [(r.info.start_time / 1000, r.info.end_time / 1000) for r in trials]
    # A trial's first training step (in its worker): its run's start plus its startup_s metric.
    first_steps = [r.info.start_time / 1000 + r.data.metrics["startup_s"] for r in trials
                   if "startup_s" in r.data.metrics]
    peak = peak_overlap(spans)

    workers_at_start = max(n for t, n in samples if t <= sweep_start)
    peak_workers = max(n for _, n in samples)
    last_peak = max(t for t, n in samples if n == peak_workers)
    first_up = next((t for t, n in samples if n), None)
    down = next((t for t, n in samples if t > last_peak and n == 0), None)
    since_start = lambda t: None if t is None else round(t - sweep_start, 1)  # noqa: E731
    figures = {
        "cap": cap, "peak_concurrent_trials": peak,
        "first_trial_s": since_start(min(start for start, _ in spans)),
        "first_step_s": since_start(min(first_steps, default=None)),
        "sweep_wall_s": since_start(sweep_end), "workers_at_sweep_start": workers_at_start,
        "peak_workers": peak_workers, "first_node_up_s": since_start(first_up),
        "scale_down_after_sweep_s": None if down is None else round(down - sweep_end, 1),
        "idle_timeout_s": IDLE_TIMEOUT_S, "sockets_beyond_loopback": len(beyond_loopback),
        "trial_spans_s": sorted([since_start(a), since_start(b)] for a, b in spans),
    }
    print(f"\nautoscaling sweep: {json.dumps(figures)}")
    (tmp_path / "autoscaling.json").write_text(json.dumps(figures, indent=2))
    fault_figures(**figures)

    assert workers_at_start == 0, "the sweep started with worker nodes up"
    assert peak == cap == peak_workers, figures
    assert down is not None, f"worker nodes still up {SCALE_DOWN_WITHIN_S:.0f} s after the sweep: {figures}"
    assert not beyond_loopback, beyond_loopback


def test_a_trial_bigger_than_the_node_types_fails_before_any_run(autoscaling, write_spec, tmp_path):
    cluster, profile = autoscaling
    env = {**cluster.env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    run = _tune(write_spec(), profile, env, "--set", "scaling.num_workers=3")
    assert run.returncode == 2, (run.stdout + run.stderr)[-2000:]
    err = run.stderr.strip()
    assert "needs 3 CPUs and 0 GPUs, but the cluster has 2 CPUs and 0 GPUs" in err, err
    assert "its node types at their maximum counts" in err and "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "results").exists()


def test_a_worker_bigger_than_any_node_type_fails_before_any_run(autoscaling, write_spec, tmp_path):
    """`check` runs the same `prepare` as `tune` (without connecting): the one-node
    trial's 2 CPUs fit the node types' 2 CPUs in all, but no one node of 1 CPU."""
    cluster, profile = autoscaling
    env = {**cluster.env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    run = subprocess.run([sys.executable, "-m", "raysweep", "check", str(write_spec()), "--cluster", str(profile),
                          "--set", "scaling.cpus_per_worker=2"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2, (run.stdout + run.stderr)[-2000:]
    assert "scaling.cpus_per_worker" in run.stderr and "no node type" in run.stderr, run.stderr
    assert not (tmp_path / "mlflow.db").exists()
