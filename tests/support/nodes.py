"""Helpers for fault cases on a `cluster up` cluster whose nodes are process groups of
this machine (the `nodes` fixture of tests/faults/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path


def node_group_of(pid: int, node_groups: list[int]) -> int:
    """The process group of the worker node whose raylet started `pid` (up the parents)."""
    current = pid
    while current > 1:
        group = os.getpgid(current)
        if group in node_groups:
            return group
        current = int(Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()[1])
    raise AssertionError(f"process {pid} does not descend from a worker node")


def add_worker_node(state, log: Path, num_cpus: int = 1) -> int:  # type: ignore[no-untyped-def]
    """One more worker node of a running `cluster up` cluster, as `cluster up` starts
    its own (capacity coming back: a replaced spot node); returns its process group."""
    import subprocess
    import sys

    from raysweep.cluster.local import cluster_env
    from raysweep.testing.helpers import free_port

    with open(log, "ab") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--block", "--disable-usage-stats",
             "--address", state.address, "--node-ip-address", "127.0.0.1",
             "--dashboard-agent-listen-port", str(free_port("127.0.0.1")), "--num-cpus", str(num_cpus)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=cluster_env(state),
            start_new_session=True)
    return process.pid


def alive_nodes(state) -> int:  # type: ignore[no-untyped-def]
    """How many nodes the `cluster up` cluster's head counts as alive (asked from a
    process of its own, with the cluster's token)."""
    import subprocess
    import sys

    from raysweep.cluster.local import cluster_env

    ask = (f"import ray; ray.init(address={state.address!r}, logging_level='ERROR'); "
           "print('alive', sum(n['Alive'] for n in ray.nodes()))")
    answer = subprocess.run([sys.executable, "-c", ask], env=cluster_env(state), capture_output=True, text=True,
                            timeout=120)
    alive = [int(line.split()[1]) for line in answer.stdout.splitlines() if line.startswith("alive ")]
    assert alive, answer.stderr[-2000:]
    return alive[-1]


def wait_alive_nodes(state, count: int, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    """Until the head counts `count` alive nodes (added nodes take seconds to join)."""
    import time

    deadline = time.monotonic() + timeout
    while (alive := alive_nodes(state)) < count:
        assert time.monotonic() < deadline, f"{alive} alive nodes after {timeout:.0f} s, waited for {count}"
        time.sleep(1)
