"""Issue 15: every cluster raysweep starts keeps to itself.

- A single-node cluster of `raysweep cluster up` listens on loopback only: every
  listening socket of its processes, read from /proc, is on 127.0.0.1 or ::1 (Ray
  binds `*` / the machine's address by default). The in-process cluster's case:
  tests/integration/test_in_process_isolation.py.
- Each cluster has its own token (0600, in its own folder), never ~/.ray/auth_token.
- Two clusters up at once on one machine do not cross: a job submitted to each
  succeeds and runs on that cluster; one cluster's token does not open the other.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from raysweep.cluster.auth import token_file
from raysweep.cluster.local import ClusterState, sockets
from raysweep.cluster.sockets import beyond_loopback
from raysweep.testing.helpers import experiment_runs, free_port, raysweep_cli
from raysweep.testing.probe import probe_spec

REPO = Path(__file__).resolve().parents[2]
NAMES = ("solo-a", "solo-b")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two single-node clusters up at once (1 CPU each), started with `raysweep cluster up`."""
    root = tmp_path_factory.mktemp("pair")
    profiles = {}
    for name in NAMES:
        profiles[name] = root / f"{name}.yaml"
        profiles[name].write_text(yaml.safe_dump({"name": name, "host": "127.0.0.1", "port": free_port(),
                                                  "dashboard_port": free_port(), "num_cpus": 1}))
    outputs = {}
    try:
        # Both come up at the same time (as two users' would), and go down so.
        ups = {name: _cli_started("cluster", "up", str(profiles[name])) for name in NAMES}
        for name, up in ups.items():
            out, err = up.communicate(timeout=600)
            assert up.returncode == 0, err[-2000:]
            outputs[name] = out
        yield {name: (profiles[name], ClusterState.load(name), outputs[name]) for name in NAMES}
    finally:
        downs = [_cli_started("cluster", "down", str(profiles[name])) for name in NAMES
                 if ClusterState.load(name) is not None]
        for down in downs:
            down.communicate(timeout=600)


def _cli_started(*args: str) -> subprocess.Popen:
    """`python -m raysweep ARGS`, started (output captured as text)."""
    return subprocess.Popen([sys.executable, "-m", "raysweep", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_single_node_clusters_listen_on_loopback_only(pair, fault_figures):
    for name, (_, state, out) in pair.items():
        listeners = sockets(state)
        beyond = beyond_loopback(listeners)
        fault_figures(single_node_sockets=[item.as_dict() | {"started_by": f"raysweep cluster up ({name})"}
                                           for item in listeners],
                      single_node_beyond_loopback=len(beyond))
        assert {"gcs_server", "raylet"} <= {item.process for item in listeners}
        assert not beyond, f"{name}: {[f'{b.bind} ({b.process})' for b in beyond]}"
        assert state.exposed == [] and "every socket of the cluster listens on loopback only" in out


def test_each_cluster_has_its_own_token(pair, isolated_home):
    tokens = {}
    for name, (_, _, out) in pair.items():
        path = token_file(name)
        assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
        tokens[name] = path.read_text().strip()
        assert str(path) in out and tokens[name] not in out
    assert tokens["solo-a"] != tokens["solo-b"]
    assert not (isolated_home / ".ray" / "auth_token").exists()
    # One cluster's token does not open the other's job API; its own does.
    dashboard_b = pair["solo-b"][1].dashboard
    for token, expected in ((tokens["solo-a"], {401, 403}), (tokens["solo-b"], {200})):
        request = urllib.request.Request(f"{dashboard_b}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                code = response.status
        except urllib.error.HTTPError as refused:
            code = refused.code
        assert code in expected


def test_a_job_on_each_of_two_clusters(pair, probe_data, tmp_path):
    """Both clusters up, one `raysweep submit` to each at the same time: both jobs
    succeed, each sweep's trials ran on its own cluster's node."""
    jobs = {}
    for name, (profile, _, _) in pair.items():
        spec = probe_spec(probe_data, tmp_path / name / "results", tmp_path / name / "probe",
                          budget={"num_trials": 1}, scheduler={"type": "fifo", "metric": "val_loss", "mode": "min",
                                                                "max_epochs": 1})
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / name / 'mlflow.db'}"}
        (tmp_path / name).mkdir(exist_ok=True)
        jobs[name] = subprocess.Popen(
            [sys.executable, "-m", "raysweep", "submit", str(tmp_path / f"{name}.yaml"), "--cluster", str(profile),
             "--timeout", "400"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = {name: job.communicate(timeout=600)[0] for name, job in jobs.items()}
    for name, job in jobs.items():
        assert job.returncode == 0, f"{name}: {outputs[name][-3000:]}"
        assert "SUCCEEDED" in outputs[name]
        runs = experiment_runs(f"sqlite:///{tmp_path / name / 'mlflow.db'}")
        assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
        status = raysweep_cli("cluster", "status", str(pair[name][0]), cwd=REPO)
        node_ids = {line.split()[1] for line in status.stdout.splitlines() if line.strip().startswith("node ")}
        drivers = {p.read_text()[:12] for p in (tmp_path / name / "results").glob("probe/*/trials/*/driver_node")}
        assert drivers and drivers <= node_ids, f"{name}'s trials ran on {drivers}, its nodes are {node_ids}"


def test_down_removes_the_clusters_ray_folder(pair):
    profile, state, _ = pair["solo-a"]
    assert Path(state.temp_dir).is_dir() and json.loads(ClusterState.path("solo-a").read_text())["temp_dir"]
    down = raysweep_cli("cluster", "down", str(profile), cwd=REPO)
    assert down.returncode == 0, down.stderr
    assert not Path(state.temp_dir).exists() and not state.alive()
