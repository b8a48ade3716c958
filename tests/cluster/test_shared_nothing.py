"""The user's path on a cluster that shares nothing with the laptop.

Three hosts (tests/support/hosts.py: network, mount and process namespaces, each with
its own sshd, HOME and /tmp; the repo and the laptop's HOME not visible, raysweep not
installed) run `cluster/onprem.yaml` (Ray's cluster launcher, `local` provider) from a
copy of the user's checkout. The laptop (this machine's own namespace, the bridge's .1)
runs an S3 server (data and run storage) and the team MLflow server (PostgreSQL, basic
auth, artifacts in S3) on the bridge address; the hosts reach both by address, with the
credentials in their own environment. From the laptop: `raysweep cluster up`, `raysweep
submit` of a sweep of 2-worker trials (the head offers no CPU, each worker host one: a
trial's ranks sit on two hosts), `raysweep register` and `report`, `cluster down`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from support.hosts import Hosts  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("sshd", path="/usr/sbin:/usr/bin")
                                or not shutil.which("rsync"),
                                reason="needs root, sshd and rsync (scripts/setup_env.sh installs them)")
RAYSWEEP = str(Path(sys.executable).with_name("raysweep"))
RAY = str(Path(sys.executable).with_name("ray"))
PROJECT_PARTS = ("raysweep", "trainers", "search_spaces", "cluster", ".rayignore", "pyproject.toml",
                 "constraints.txt")


@dataclass
class Cluster:
    hosts: Hosts
    project: Path
    profile: str  # relative to project
    env: dict[str, str]
    mlflow: object
    s3: object

    def raysweep(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([RAYSWEEP, *args], cwd=self.project, env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"raysweep {' '.join(args)} exited {result.returncode}\n"
                                 f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result


def _project_copy(root: Path) -> Path:
    """The user's checkout, as `submit` uploads it (no .venv, no results)."""
    project = root / "project"
    project.mkdir()
    for part in PROJECT_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, project / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, project / part)
    return project


def _onprem_copy(project: Path, hosts: Hosts, name: str) -> str:
    """cluster/onprem.yaml with these hosts' addresses and key (what a user edits). The
    worker hosts offer 1 CPU each (the machine has 2 cores for three hosts)."""
    raw = yaml.safe_load((project / "cluster" / "onprem.yaml").read_text())
    raw["cluster_name"] = name
    raw["provider"].update(head_ip=hosts[0].ip, worker_ips=[h.ip for h in hosts.hosts[1:]])
    raw["auth"] = {"ssh_user": "root", "ssh_private_key": str(hosts.key)}
    raw["file_mounts"]["~/.raysweep/auth_token"] = f"~/.raysweep/clusters/{name}/auth_token"
    starts = raw["worker_start_ray_commands"]
    starts[-1] = starts[-1] + " --num-cpus=1"
    path = project / "cluster" / "hosts.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return "cluster/hosts.yaml"


def _tunnel(env: dict[str, str], project: Path, config: Path) -> tuple[subprocess.Popen, int]:
    """`ray dashboard` (an SSH tunnel to the head's 127.0.0.1:8265) on a free port here."""
    from raysweep.testing.helpers import free_port

    port = free_port()
    proc = subprocess.Popen([RAY, "dashboard", "--port", str(port), str(config)], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import urllib.request

    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=5)
            return proc, port
        except Exception as exc:  # (401 without a token is an answer too)
            if getattr(exc, "code", None):
                return proc, port
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"no tunnel to the head's dashboard: {exc}") from None
            time.sleep(1)


@pytest.fixture(scope="module")
def onprem(tmp_path_factory: pytest.TempPathFactory, isolated_home: Path) -> Iterator[Cluster]:
    from raysweep.data.examples import write_digits_parquet
    from raysweep.testing.seaweed import S3Server
    from raysweep.testing.team_mlflow import TeamMlflow, postgres_bin

    try:
        postgres_bin()
    except Exception as exc:
        pytest.skip(f"no PostgreSQL for the team MLflow server: {exc}")
    root = tmp_path_factory.mktemp("onprem")
    project = _project_copy(root)
    with Hosts(root / "hosts", count=3, hide=[REPO]) as hosts, \
            S3Server(root / "s3", buckets=["data", "runs"], stop_timeout=2, host=hosts.laptop_ip) as s3, \
            TeamMlflow(s3, host=hosts.laptop_ip) as mlflow:
        digits = root / "digits"
        write_digits_parquet(digits)
        s3.upload(digits, "data/digits")
        user, password = mlflow.add_user("alice")
        # The machines' own environment, as an image or an admin sets it: credentials for
        # the object store and the tracking server (never sent with a job).
        hosts.environment({**s3.env(), "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_"))}
        env.update(s3.env())
        env.update(mlflow.client_env(user, password))
        env["RAY_TMPDIR"] = str(root / "laptop-ray")  # the launcher's cluster state on this side
        name = f"hosts-{hosts.run_id}"
        cluster = Cluster(hosts, project, _onprem_copy(project, hosts, name), env, mlflow, s3)
        tunnel = None
        try:
            cluster.raysweep("cluster", "up", cluster.profile)
            _wait_nodes(cluster, 3)
            tunnel, port = _tunnel(env, project, Path(cluster.profile))  # (README: `ray dashboard PROFILE &`)
            cluster.env = {**env, "RAY_ADDRESS": f"http://127.0.0.1:{port}"}
            yield cluster
        finally:
            if tunnel is not None:
                os.killpg(tunnel.pid, signal.SIGKILL)
            cluster.raysweep("cluster", "down", cluster.profile, check=False, timeout=300)
    left = hosts.leftovers()
    assert not left, f"namespaces or links left after the hosts stopped: {left}"


def _ray_processes(hosts: Hosts, host) -> list[str]:
    out = subprocess.run(["ps", "-o", "args=", "-p", ",".join(map(str, hosts.pids(host))) or "1"],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "ray" in line and "sshd" not in line]


def _wait_nodes(cluster: Cluster, count: int, timeout: float = 240) -> None:
    """Until `count` nodes are alive (the head's autoscaler starts the workers over SSH)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [h.name for h in cluster.hosts.hosts if any("raylet" in p for p in _ray_processes(cluster.hosts, h))]
        if len(found) >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"only {found} run a raylet after {timeout:.0f} s")
        time.sleep(3)


def test_hosts_share_nothing_with_the_laptop(onprem: Cluster) -> None:
    hosts = onprem.hosts
    for host in hosts.hosts:
        seen = hosts.ssh(host, f"ls {REPO} | wc -l; ls /tmp; cd / && python -c 'import raysweep.cli' 2>&1 | "
                               "tail -1; cd; cat ~/.raysweep/auth_token | wc -c").stdout.split("\n")
        assert seen[0] == "0", f"{host.name} sees the repo"
        assert "ModuleNotFoundError" in "\n".join(seen), f"{host.name} has raysweep installed"
        assert int(seen[-2]) > 16, f"{host.name} has no cluster token"


class SocketSampler(threading.Thread):
    """Samples the TCP listeners of the worker hosts while a run is live."""

    def __init__(self, hosts: Hosts) -> None:
        super().__init__(daemon=True)
        self.hosts, self.seen, self.done = hosts, set(), threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for host in self.hosts.hosts[1:]:
                for address, _port, process in self.hosts.listening(host):
                    self.seen.add((host.name, host.ip, address, process.split('"')[1] if '"' in process else process))
            time.sleep(0.5)


def test_sweep_of_two_host_trials_submitted_from_the_laptop(onprem: Cluster, tmp_path: Path) -> None:
    overrides = ["data.train=s3://data/digits/train", "data.validation=s3://data/digits/validation",
                 "storage_path=s3://runs/sweeps", "scaling.num_workers=2", "budget.num_trials=2",
                 "scheduler.max_epochs=2", "scheduler.grace_period=1"]
    args = ["submit", "search_spaces/digits_mlp.yaml", "--cluster", onprem.profile]
    for item in overrides:
        args += ["--set", item]
    sampler = SocketSampler(onprem.hosts)
    sampler.start()
    try:
        log = onprem.raysweep(*args, "--timeout", "900", timeout=1000).stdout
    finally:
        sampler.done.set()
        sampler.join()
    assert "2 trials" in log, log[-3000:]
    # Each trial's two ranks ran on the two worker hosts (the head has no CPU, each
    # worker host one), and their collective sockets listened on the host's address,
    # never on its loopback (where a rank on the other host cannot connect).
    training = {(h, ip, a, p) for h, ip, a, p in sampler.seen if "Train" in p}
    assert {h for h, *_ in training} == {"h1", "h2"}, sorted(sampler.seen)
    loopback = [s for s in training if s[2].startswith("127.")]
    assert not loopback, loopback

    # Everything arrived at the team MLflow server the hosts reached by address.
    import mlflow

    client = mlflow.MlflowClient(onprem.env["MLFLOW_TRACKING_URI"])
    os.environ.update({k: onprem.env[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
    experiment = client.get_experiment_by_name("digits-mlp")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children), [r.info for r in children]
    assert all(client.get_metric_history(r.info.run_id, "val_loss") for r in children)

    # From the laptop: the best trial's model registered from its checkpoint in the
    # bucket, and the sweep's report.
    sweep = parents[0].info.run_id
    registered = onprem.raysweep("register", sweep, "--name", "digits-onprem").stdout
    assert "digits-onprem" in registered, registered
    assert client.get_latest_versions("digits-onprem")
    onprem.raysweep("report", sweep, "--out", str(tmp_path / "report"))
    assert (tmp_path / "report" / "index.html").is_file()


def test_cluster_down_stops_ray_on_every_host(onprem: Cluster) -> None:
    onprem.raysweep("cluster", "down", onprem.profile, timeout=300)
    left = {h.name: _ray_processes(onprem.hosts, h) for h in onprem.hosts.hosts}
    assert not any(left.values()), left
