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
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from support.hosts import Hosts  # noqa: E402
from support.onprem import Cluster, missing, onprem_cluster, ray_processes  # noqa: E402

if missing() is not None and os.environ.get("CI") == "true":  # (CI must run it, not skip it)
    raise RuntimeError(f"tests/cluster/test_shared_nothing.py cannot run: {missing()}")
pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")


@pytest.fixture(scope="module")
def onprem(tmp_path_factory: pytest.TempPathFactory, isolated_home: Path) -> Iterator[Cluster]:
    with onprem_cluster(tmp_path_factory.mktemp("onprem")) as cluster:
        yield cluster


def test_hosts_share_nothing_with_the_laptop(onprem: Cluster) -> None:
    hosts = onprem.hosts
    for host in hosts.hosts:
        seen = hosts.ssh(host, f"ls {REPO} | wc -l; ls /tmp; cd / && python -c 'import raysweep.cli' 2>&1 | "
                               "tail -1; cd; cat ~/.raysweep/auth_token | wc -c").stdout.split("\n")
        assert seen[0] == "0", f"{host.name} sees the repo"
        assert "ModuleNotFoundError" in "\n".join(seen), f"{host.name} has raysweep installed"
        assert int(seen[-2]) > 16, f"{host.name} has no cluster token"
    # A machine without the cluster's token cannot join: h1 with another token.
    stranger = hosts.ssh(hosts[1], "cd / && env -u RAY_AUTH_TOKEN_PATH RAY_AUTH_MODE=token "
                                   "RAY_AUTH_TOKEN=00000000000000000000000000000000 timeout 60 "
                                   f"python -c \"import ray; ray.init(address='{hosts[0].ip}:6379')\"",
                         check=False)
    assert stranger.returncode != 0, stranger.stdout[-2000:]
    assert "token" in (stranger.stdout + stranger.stderr).lower(), stranger.stderr[-2000:]


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
    assert client.search_model_versions("name = 'digits-onprem'")
    onprem.raysweep("report", sweep, "--out", str(tmp_path / "report"))
    assert (tmp_path / "report" / "report.html").is_file()


def test_cluster_down_stops_ray_on_every_host(onprem: Cluster) -> None:
    onprem.raysweep("cluster", "down", onprem.profile, timeout=300)
    left = {h.name: ray_processes(onprem.hosts, h) for h in onprem.hosts.hosts}
    assert not any(left.values()), left
