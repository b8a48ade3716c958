"""`cluster/onprem.yaml` brought up on hosts that share nothing with the laptop.

    with onprem_cluster(root) as cluster:    # hosts, S3 + team MLflow on the bridge, `cluster up`
        cluster.raysweep("submit", SPEC, "--cluster", cluster.profile, ...)

The laptop (this machine's own namespace, the bridge's .1) runs an S3 server (data and
run storage) and the team MLflow server (PostgreSQL, basic auth, artifacts in S3) on
the bridge address; the hosts reach both by address, with the credentials in their own
environment (as an image or an admin sets a machine's environment; never sent with a
job). The project is a copy of the user's checkout, with `cluster/hosts.yaml`: the
shipped onprem.yaml with these hosts' addresses and key, as a user edits it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from support.hosts import Host, Hosts

REPO = Path(__file__).resolve().parents[2]
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

    tunnel_proc: subprocess.Popen | None = None

    def connect(self) -> None:
        """The job API through `ray dashboard PROFILE` (README: `ray dashboard PROFILE &`)."""
        self.disconnect()
        self.tunnel_proc, port = tunnel(self.env, self.project, Path(self.profile))
        self.env = {**self.env, "RAY_ADDRESS": f"http://127.0.0.1:{port}"}

    def disconnect(self) -> None:
        if self.tunnel_proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.tunnel_proc.pid, signal.SIGKILL)
            self.tunnel_proc = None

    def raysweep(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([RAYSWEEP, *args], cwd=self.project, env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"raysweep {' '.join(args)} exited {result.returncode}\n"
                                 f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result


def project_copy(root: Path) -> Path:
    """The user's checkout, as `submit` uploads it (no .venv, no results)."""
    project = root / "project"
    project.mkdir(parents=True)
    for part in PROJECT_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, project / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, project / part)
    return project


def onprem_copy(project: Path, hosts: Hosts, name: str) -> str:
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


def tunnel(env: dict[str, str], project: Path, config: Path) -> tuple[subprocess.Popen, int]:
    """`ray dashboard` (an SSH tunnel to the head's 127.0.0.1:8265) on a free port here."""
    from raysweep.testing.helpers import free_port

    port = free_port()
    proc = subprocess.Popen([RAY, "dashboard", "--port", str(port), str(config)], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
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


def missing() -> str | None:
    """Why hosts cannot be made here (None: they can)."""
    from tests.support.team_mlflow import postgres_bin

    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    if not shutil.which("sshd", path="/usr/sbin:/usr/bin") or not shutil.which("rsync"):
        return "needs sshd and rsync (scripts/setup_env.sh installs them)"
    try:
        postgres_bin()
    except Exception as exc:
        return f"no PostgreSQL for the team MLflow server: {exc}"
    return None


@contextlib.contextmanager
def onprem_cluster(root: Path, count: int = 3) -> Iterator[Cluster]:
    """Hosts, the laptop's servers, `cluster up` and the dashboard tunnel; all stopped
    at the end (`cluster down`, then every host process and namespace)."""
    from raysweep.data.examples import write_digits_parquet
    from tests.support.seaweed import S3Server
    from tests.support.team_mlflow import TeamMlflow

    project = project_copy(root)
    with Hosts(root / "hosts", count=count, hide=[REPO]) as hosts, \
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
        cluster = Cluster(hosts, project, onprem_copy(project, hosts, name), env, mlflow, s3)
        try:
            cluster.raysweep("cluster", "up", cluster.profile)
            wait_nodes(cluster, count)
            cluster.connect()
            yield cluster
        finally:
            cluster.disconnect()
            cluster.raysweep("cluster", "down", cluster.profile, check=False, timeout=300)
    left = hosts.leftovers()
    assert not left, f"namespaces or links left after the hosts stopped: {left}"


def ray_processes(hosts: Hosts, host: Host) -> list[str]:
    out = subprocess.run(["ps", "-o", "args=", "-p", ",".join(map(str, hosts.pids(host))) or "1"],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "ray" in line and "sshd" not in line]


def wait_nodes(cluster: Cluster, count: int, timeout: float = 300) -> None:
    """Until the head's cluster has `count` live nodes (its autoscaler starts the workers
    over SSH; a worker's old raylet may still run after its head was lost)."""
    probe = ("cd / && timeout 60 python -c \"import ray; ray.init(address='auto', logging_level='ERROR'); "
             "print('alive', sum(n['Alive'] for n in ray.nodes()))\"")
    deadline = time.monotonic() + timeout
    while True:
        answer = cluster.hosts.ssh(cluster.hosts[0], probe, check=False, timeout=90)
        alive = [int(line.split()[1]) for line in answer.stdout.splitlines() if line.startswith("alive ")]
        if alive and alive[-1] >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{alive[-1] if alive else 'no'} live nodes after {timeout:.0f} s: "
                                 f"{answer.stderr[-1000:]}")
        time.sleep(3)
