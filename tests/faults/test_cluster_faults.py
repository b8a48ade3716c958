"""Faults of a real multi-node cluster (`ray start` processes on 127.0.0.1): a worker
node killed mid-run, and what the cluster and an MLflow server expose.

Runs after the tier's tests on the shared cluster (tests/conftest.py puts modules named
test_cluster* last); the cluster is this module's own, so everything talks to it from a
subprocess or HTTP.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from raysweep.cluster.auth import token_file
from raysweep.testing.evidence import checkpoint_evidence, probe_row_ids, run_figures
from raysweep.testing.helpers import (
    listening_sockets,
    max_rel_change,
    only_run,
    probe_params,
    raysweep_cli,
    reference,
    wait_for_epoch,
    wait_for_pid,
)
from tests.support.mlflow_store import mlflow_server
from tests.support.nodes import node_group_of

REPO = Path(__file__).resolve().parents[2]


def _raysweep(*args: str) -> subprocess.CompletedProcess:
    return raysweep_cli(*args, cwd=REPO)


# Every job API endpoint of the dashboard (submit, list, look up, logs, stop, delete,
# and the package upload a job's working_dir goes through): each is asked once
# without the token. A bogus job id still shows whether the request got past the
# token check (404) or was refused by it (401/403).
_JOB = "raysweep-unauthenticated-probe"
JOB_APIS = [("POST", "/api/jobs/"), ("GET", "/api/jobs/"), ("GET", f"/api/jobs/{_JOB}"),
            ("GET", f"/api/jobs/{_JOB}/logs"), ("GET", f"/api/jobs/{_JOB}/logs/tail"),
            ("POST", f"/api/jobs/{_JOB}/stop"), ("DELETE", f"/api/jobs/{_JOB}"),
            ("PUT", "/api/packages/gcs/_ray_pkg_raysweepunauthenticatedprobe.zip"),
            ("GET", "/api/packages/gcs/_ray_pkg_raysweepunauthenticatedprobe.zip")]


def unauthenticated_responses(dashboard: str, job: bytes) -> dict[str, int]:
    """The HTTP status each of JOB_APIS answers a request without the token with."""
    codes: dict[str, int] = {}
    for method, path in JOB_APIS:
        body = job if path == "/api/jobs/" and method == "POST" else (b"PK\x05\x06" + bytes(18)
                                                                       if method == "PUT" else None)
        request = urllib.request.Request(f"{dashboard}{path}", data=body, method=method,
                                         headers={"Content-Type": "application/json"} if body == job else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                codes[f"{method} {path}"] = response.status
        except urllib.error.HTTPError as error:
            codes[f"{method} {path}"] = error.code
    return codes


def test_exposure_report_and_no_unauthenticated_job_submission(nodes, tmp_path, fault_figures):
    """Case 10: with the cluster up and an MLflow server the test starts, the job API
    refuses a job without the token, and every listening socket is reported."""
    _, state = nodes
    with mlflow_server(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}") as (server, _):
        # Were the job run, it would run on the cluster (this machine, this user): it
        # could write here.
        marker = tmp_path / "unauthenticated-job-ran"
        job = json.dumps({"entrypoint": f"touch {shlex.quote(str(marker))}"}).encode()
        codes = unauthenticated_responses(state.dashboard, job)
        time.sleep(1)
        accepted = sorted(api for api, code in codes.items() if code not in (401, 403))
        if marker.exists() and "POST /api/jobs/" not in accepted:
            accepted.append("POST /api/jobs/ (the job ran)")
        fault_figures(unauthenticated_job_apis=len(accepted), job_apis_tried=len(codes), job_api_responses=codes)
        assert codes["POST /api/jobs/"] == 401
        assert not marker.exists(), "a job without the token ran"
        assert accepted == [], f"job APIs that took a request without the token: {codes}"

        groups = {pid: f"ray node {i} (raysweep cluster up)" for i, pid in enumerate(state.pids)}
        groups[server.pid] = "mlflow server (started by the tests)"
        sockets = listening_sockets(groups)
        assert any(s["started_by"].startswith("mlflow") for s in sockets)
        assert all(s["loopback_only"] for s in sockets if s["started_by"].startswith("mlflow"))
        dashboard = state.dashboard.rsplit("//", 1)[-1]
        assert any(s["bind"] == dashboard and s["loopback_only"] for s in sockets), "job API not on loopback"
        (tmp_path / "sockets.json").write_text(json.dumps(sockets, indent=2))
        fault_figures(sockets=sockets,
                      beyond_loopback=sum(not s["loopback_only"] for s in sockets))


def test_killed_worker_node_run_finishes_on_the_other(nodes, write_spec, tmp_path, fault_figures, probe_data,
                                                     mlflow_stores):
    """Case 2: SIGKILL every process of the node the worker runs on (raylet, its
    workers) mid-epoch; with max_failures=1 the run restarts on the other node from
    its checkpoint and ends with the uninterrupted metrics."""
    _, state = nodes
    uri = mlflow_stores.new(tmp_path / "mlflow.db")
    spec = write_spec(params=probe_params(tmp_path, pause_epoch=1), failure={"max_failures": 1},
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 3})
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    driver = subprocess.Popen([sys.executable, "-m", "raysweep", "train", str(spec), "--address", state.address],
                              cwd=REPO, env=env, stdout=(tmp_path / "driver.log").open("w"),
                              stderr=subprocess.STDOUT)
    pid = wait_for_pid(tmp_path / "probe" / "pause.pid")
    wait_for_epoch(uri, 0)
    first_node = (tmp_path / "probe" / "node-rank0.txt").read_text()
    node_group = node_group_of(pid, state.pids[1:])
    os.killpg(node_group, signal.SIGKILL)  # the node: `ray start`, its raylet and agents
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # and the worker (Ray puts it in a group of its own)
    killed_at = time.time()
    fault_figures(faults_injected=1)
    folder = tmp_path / "results" / "probe" / "probe-train"
    at_kill = checkpoint_evidence(folder, uri)
    code = driver.wait(timeout=400)
    fault_figures(**run_figures(uri, folder, earlier=[at_kill], probe=tmp_path / "probe", epochs=range(3),
                                expected=probe_row_ids(probe_data / "train")))
    assert code == 0, (tmp_path / "driver.log").read_text()[-3000:]
    assert (tmp_path / "probe" / "node-rank0.txt").read_text() != first_node, "did not move to the other node"
    run = only_run(uri)
    assert run.info.status == "FINISHED"
    change = max_rel_change(uri, run.info.run_id, reference(spec, 3, tmp_path))
    fault_figures(metric_change=change)
    assert change <= 1e-6
    fault_figures(faults_survived=1, recovery_s=time.time() - killed_at)


def test_token_file_is_private(nodes):
    _, state = nodes
    assert oct(token_file(state.name).stat().st_mode & 0o777) == "0o600"  # the cluster's own token
