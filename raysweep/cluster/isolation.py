"""What keeps a cluster to itself: loopback-only sockets, its own Ray temp folder and
its own token.

Loopback. Ray rewrites a 127.0.0.1 node address to the machine's
(`resolve_ip_for_localhost` in `ray/_private/services.py` calls
`get_node_ip_address`), so GCS, raylets, agents, workers and the metrics exporters
bind `*` / the machine's address, the metrics exporters without a token check. With
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read by `ray._private.ray_constants` at import,
`get_node_ip_address` answers 127.0.0.1 and a single-node cluster puts every socket on
loopback, token checks kept (`tests/cluster/test_cluster_isolation.py` pins it).
The price: `ray start --address` (a second node) aborts, so multi-node profiles keep
Ray's default.

Temp folder. Ray keeps session folders, sockets and `ray_current_cluster` (which its
own actors, Train V2's placement-group cleaner among them, read to find "the
cluster") under `$RAY_TMPDIR/ray`, default `/tmp/ray`, one per machine. Each cluster
raysweep starts gets a private folder of its own as RAY_TMPDIR.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

from raysweep._upstream.cluster import LOOPBACK_SWITCH
from raysweep.cluster.auth import token_env, write_token


def loopback_env(loopback: bool) -> dict[str, str]:
    """The environment that keeps a node's (or a client's) sockets on loopback, or, for
    a worker node joining with `ray start --address`, Ray's default (it aborts else)."""
    return {LOOPBACK_SWITCH: "0" if loopback else "1"}


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at `host` now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def metric_ports(host: str = "127.0.0.1") -> dict[str, str]:
    """Free ports for the head's autoscaler and dashboard Prometheus servers (Ray's
    defaults, 44217 and 44227, are fixed: a second cluster on the machine loses them)."""
    return {key: str(free_port(host)) for key in ("AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT")}


class PrivatePlace:
    """An in-process cluster's own folder (0700, short: Ray's Unix socket paths live
    under it): Ray's temp folder and the cluster's token (0600), and its own metrics
    ports. `enter` points this
    process (and so the cluster it starts) at them; `leave` restores the environment
    and removes the folder."""

    KEYS = ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT")

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rs-"))
        self.token = write_token(self.root / "auth_token")
        self._saved: dict[str, str | None] = {}

    def enter(self) -> None:
        self._saved = {key: os.environ.get(key) for key in self.KEYS}
        os.environ.update({"RAY_TMPDIR": str(self.root), **token_env(self.token), **metric_ports()})

    def leave(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(self.root, ignore_errors=True)
