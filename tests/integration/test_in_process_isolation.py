"""Issue 15, the shared in-process cluster (`ray_cluster`): it listens on loopback only
(every listening socket of its processes, read from /proc, is on 127.0.0.1 or ::1) and
its token is its own (0600, in its own folder), never ~/.ray/auth_token. Clusters of
`raysweep cluster up`: tests/cluster/test_cluster_isolation.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import ray

from raysweep.cluster.sockets import beyond_loopback, descendants, in_groups, listening


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_in_process_cluster_listens_on_loopback_only(ray_cluster, s3_server, fault_figures):
    @ray.remote(num_cpus=0)
    def pid() -> int:
        return os.getpid()

    assert ray.get(pid.remote()) in descendants([os.getpid()]), "a Ray worker outside this process tree"
    test_server = set(in_groups([s3_server.pgid])) if s3_server.pgid else set()
    cluster = [p for p in descendants([os.getpid()]) if p not in test_server]
    listeners = listening(cluster)
    beyond = beyond_loopback(listeners)
    fault_figures(in_process_sockets=len(listeners), in_process_beyond_loopback=len(beyond))
    assert {"gcs_server", "raylet"} <= {item.process for item in listeners}, listeners
    assert not beyond, f"beyond loopback: {[f'{b.bind} ({b.process})' for b in beyond]}"


def test_in_process_cluster_has_its_own_token(ray_cluster, isolated_home):
    token = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    assert token.is_file() and _mode(token) == 0o600 and _mode(token.parent) == 0o700
    assert token.parent == Path(os.environ["RAY_TMPDIR"]), "token outside the cluster's own folder"
    assert not (isolated_home / ".ray" / "auth_token").exists(), "a cluster token landed in ~/.ray"
