"""`raysweep cluster up|status|down` and job submission against a real local
cluster: a head and one worker node as separate `ray start` processes on 127.0.0.1.

This cluster is separate from the session's in-process one, so everything that
talks to it runs in a subprocess or over HTTP.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from raysweep.cluster.auth import token_file
from raysweep.cluster.local import sockets
from raysweep.cluster.sockets import beyond_loopback
from raysweep.cluster.submit import upload_files
from raysweep.testing.helpers import cluster_up, experiment_runs, free_port, raysweep_cli
from raysweep.tracking.study import load_study

REPO = Path(__file__).resolve().parents[2]
NAME = "two-nodes"


def _raysweep(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return raysweep_cli(*args, cwd=REPO, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    """Head (no CPU, on-demand) + 2 worker nodes (1 CPU each, one preemptible); its
    nodes get the test S3 server's AWS variables as a cloud node's environment would."""
    root = tmp_path_factory.mktemp("cluster")
    with cluster_up(root, {
            "name": "two-nodes", "host": "127.0.0.1", "port": free_port(), "dashboard_port": free_port(),
            "num_cpus": 0, "resources": {"on_demand": 4},
            "worker_nodes": [{"num_cpus": 1, "resources": {"preemptible": 1}}, {"num_cpus": 1}],
            "trial_driver_resources": {"on_demand": 1}}, cwd=REPO) as (profile, state, out):
        yield profile, state, out
    with pytest.MonkeyPatch.context() as env:  # (cluster_up checked `cluster down` stopped every process)
        env.setenv("RAYSWEEP_STATE_DIR", str(root / "state"))
        again = _raysweep("cluster", "down", str(profile))
    assert again.returncode == 2 and "is not up" in again.stderr and "Traceback" not in again.stderr


def test_up_prints_address_and_how_to_submit_without_the_token(cluster):
    profile, state, out = cluster
    assert state.address.startswith("127.0.0.1:") and "raysweep submit" in out and "ray job submit" in out
    token = token_file(NAME).read_text().strip()
    assert token not in out
    assert oct(token_file(NAME).stat().st_mode & 0o777) == "0o600"


def test_starting_twice_is_a_clear_error(cluster):
    profile, state, _ = cluster
    again = _raysweep("cluster", "up", str(profile))
    assert again.returncode == 2
    assert f"is already up at {state.address}" in again.stderr and "Traceback" not in again.stderr


def test_status_lists_every_node_with_its_resources(cluster):
    profile, state, _ = cluster
    status = _raysweep("cluster", "status", str(profile))
    assert status.returncode == 0, status.stderr
    nodes = [line for line in status.stdout.splitlines() if line.strip().startswith("node ")]
    assert len(nodes) == 3 and all("alive" in n for n in nodes)
    assert sum("CPU=1" in n for n in nodes) == 2
    assert any("preemptible=1" in n for n in nodes) and any("on_demand=4" in n for n in nodes)


def test_job_api_refuses_requests_without_the_token(cluster):
    _, state, _ = cluster
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{state.dashboard}/api/jobs/", timeout=10)
    assert refused.value.code == 401
    request = urllib.request.Request(f"{state.dashboard}/api/jobs/",
                                     headers={"Authorization": f"Bearer {token_file(NAME).read_text().strip()}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_dashboard_answers_only_on_loopback(cluster):
    _, state, _ = cluster
    port = int(state.dashboard.rsplit(":", 1)[1])
    others = [ip for ip in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
              if not ip.startswith("127.") and ":" not in ip]
    for ip in others:
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex((ip, port)) != 0, f"dashboard reachable on {ip}"


def test_two_worker_training_spreads_over_the_worker_nodes(cluster, write_spec, tmp_path, mlflow_stores):
    _, state, _ = cluster
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_stores.new(tmp_path / "mlflow.db")}
    run = _raysweep("train", str(write_spec()), "--address", state.address,
                    "--set", "scaling.num_workers=2", "--set", "scheduler.max_epochs=1", env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    probe = tmp_path / "probe"
    nodes = {(probe / f"node-rank{r}.txt").read_text() for r in range(2)}
    assert len(nodes) == 2, "both workers ran on one node"
    shards = [np.load(probe / f"train-rank{r}-epoch0.npy") for r in range(2)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(np.concatenate(shards).tolist()) == list(range(203))
    checkpoints = list((tmp_path / "results" / "probe" / "probe-train").glob("checkpoint_*/state.pt"))
    assert checkpoints, "no checkpoint reached the run's storage"


def _check_sweep(uri: str, results: Path, trials: int) -> None:
    runs = experiment_runs(uri)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == trials + 1
    assert all(r.info.status == "FINISHED" for r in runs)
    (sweep_dir,) = [p for p in (results / "probe").iterdir() if p.is_dir()]
    study = load_study(str(sweep_dir), "probe")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * trials


def test_raysweep_submit_runs_a_sweep_as_a_job(cluster, write_spec, tmp_path, mlflow_stores):
    profile, _, _ = cluster
    uri = mlflow_stores.new(tmp_path / "mlflow.db")
    job = _raysweep("submit", str(write_spec()), "--cluster", str(profile), "--timeout", "400",
                    env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    out = job.stdout + job.stderr
    assert job.returncode == 0, out[-3000:]
    assert "SUCCEEDED" in out and token_file(NAME).read_text().strip() not in out
    _check_sweep(uri, tmp_path / "results", trials=2)
    status = _raysweep("cluster", "status", str(profile)).stdout
    (head,) = [line.split()[1] for line in status.splitlines() if "on_demand=4" in line]
    drivers = {p.read_text()[:12] for p in (tmp_path / "results").glob("probe/*/trials/*/driver_node")}
    assert drivers == {head}, "trial drivers were not pinned to the on-demand node"
    client = MlflowClient(uri)
    token = token_file(NAME).read_text().strip()
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        assert token not in str(run.data.params) + str(run.data.tags), "token leaked into MLflow"


def test_token_stays_out_of_raysweep_logs(cluster):
    token = token_file(NAME).read_text().strip()
    for log in cluster[1].logs:
        assert token not in Path(log).read_text(errors="replace")


def test_wrong_token_says_how_to_get_the_right_one(cluster, write_spec):
    _, state, _ = cluster
    env = {**os.environ, "RAY_AUTH_TOKEN": "not-the-token-" + "x" * 20, "RAY_AUTH_MODE": "token"}
    run = _raysweep("train", str(write_spec()), "--address", state.address, env=env, timeout=120)
    assert run.returncode == 2
    assert f"raysweep: error: {state.address}: the cluster did not let this process in" in run.stderr
    assert "ray get-auth-token" in run.stderr


def test_plain_ray_job_submit(cluster, write_spec, tmp_path, mlflow_stores):
    """A spec whose data is in a bucket: the job uploads the repo only, and its
    workers stream the data from the store with the nodes' own credentials."""
    _, state, _ = cluster
    assert not [p for p, _ in upload_files(REPO) if p.suffix == ".parquet"], "no data in the upload"
    bucket_data = {"train": "s3://data/probe/train", "validation": "s3://data/probe/validation",
                   "features": ["row_id", "x*"], "label": "label", "loader": "stream"}
    uri = mlflow_stores.new(tmp_path / "mlflow.db")
    runtime_env = yaml.safe_dump({"env_vars": {"MLFLOW_TRACKING_URI": uri, "RAY_TRAIN_V2_ENABLED": "1"}})
    (tmp_path / "runtime_env.yaml").write_text(runtime_env)
    # As `cluster up` prints it: the cluster's own token file.
    env = {**os.environ, "RAY_ADDRESS": state.dashboard, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token_file(NAME))}
    ray_cli = str(Path(sys.executable).with_name("ray"))
    for _ in range(20):  # job agents register a little after the nodes come up
        job = subprocess.run(
            [ray_cli, "job", "submit", "--working-dir", ".", "--runtime-env", str(tmp_path / "runtime_env.yaml"),
             "--", "python", "-m", "raysweep", "tune", str(write_spec(data=bucket_data))],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in job.stderr:
            break
        time.sleep(3)
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    _check_sweep(uri, tmp_path / "results", trials=2)
    client = MlflowClient(uri)
    parents = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
               if r.data.tags.get("raysweep.kind") == "sweep"]
    assert [p.data.tags["raysweep.data.loader"] for p in parents] == ["stream"]


def _http_status(host: str, port: int) -> int | None:
    """The HTTP status a request without the token gets (None: no HTTP answer, e.g. gRPC)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as refused:
        return refused.code
    except (OSError, ValueError, http.client.HTTPException):
        return None


def test_multi_node_names_what_it_binds_beyond_loopback(cluster):
    """A worker node cannot keep to loopback (it reaches the head at the machine's
    address): `up` names each socket that listens beyond it, and of those only the
    head's two Prometheus ports answer without the token (README, Security)."""
    _, state, out = cluster
    assert state.exposed and all(item in out for item in state.exposed)
    codes = {}
    for item in beyond_loopback(sockets(state)):
        host = "127.0.0.1" if item.host in ("0.0.0.0", "::") else item.host.removeprefix("::ffff:")
        codes[item.port] = _http_status(f"[{host}]" if ":" in host else host, item.port)
    open_without_token = sorted(port for port, code in codes.items() if code is not None and code < 400)
    assert open_without_token == sorted(int(p) for p in state.metric_ports.values()), codes
