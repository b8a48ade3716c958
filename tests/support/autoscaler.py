"""An autoscaling Ray cluster on this one machine, for tests: Ray's own fake
multi-node provider (`ray/autoscaler/_private/fake_multi_node/node_provider.py`)
behind the v1 autoscaler of a `ray start --head` process.

The head starts with no worker nodes; the autoscaler (the head's monitor process)
starts fake worker nodes (a raylet and its agents each, in-process `Node`s of the
monitor, resources as the node type says) when tasks or placement groups wait for
resources, and stops them once they sit idle for `idle_timeout_s`.

What `ray.cluster_utils.AutoscalingCluster` would do, without what makes it unusable
next to other clusters: it runs `ray stop --force` (every Ray process of the user,
machine-wide) and reads a `fake_multi_node/example.yaml` that the 2.60 wheel does not
ship. This one is its own:

- its own Ray temp folder (RAY_TMPDIR), token (token auth on) and ports, all on
  127.0.0.1 (the fake nodes are started in-process by the monitor, not with
  `ray start --address`, so the loopback switch of `raysweep.cluster.isolation`
  holds for them too: every socket stays on loopback);
- no `launch_multiple`: the fake provider starts one node per launch, whatever the
  count, and the autoscaler asks again for the rest. With it, the autoscaler queued
  another node while the first launch still ran, and overshot max_workers (3 of 2,
  the extra stopped at once);
- `use_node_id_as_ip`: the v1 autoscaler keys its load metrics by node "IP"; every
  fake node has the machine's, so without it idle nodes are never matched and never
  stopped. The fake provider reports a node's id as its IP and starts each node
  with that id, so keyed by id the two agree;
- stopped by its own processes only: the head's process group, and whatever carries
  its temp folder in RAY_TMPDIR (the fake nodes' processes), never `ray stop`.

`python -m tests.support.autoscaler watch ADDRESS OUT INTERVAL_S` samples the alive
worker nodes of a cluster into a JSON-lines file (`NodeWatcher` runs it with the
cluster's `env()`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysweep.cluster.auth import write_token
from raysweep.cluster.isolation import free_port, loopback_env, metric_ports

REPO = Path(__file__).resolve().parents[2]  # (`-m tests.support.autoscaler` runs from there)

HEAD_TYPE = "ray.head.default"
"""The fake provider's name for the head node type (FAKE_HEAD_NODE_TYPE)."""
START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class WorkerType:
    """One worker node type: what each node offers and how many the autoscaler may start."""

    resources: Mapping[str, float]
    """CPU and GPU included (the fake provider starts the node with exactly these)."""
    max_workers: int
    min_workers: int = 0
    object_store_mb: int = 80
    """Each fake node's object store (small: they share this machine's memory)."""


@dataclass
class FakeAutoscalingCluster:
    """`with FakeAutoscalingCluster({...}) as cluster:` a head with `head_cpus` CPUs and
    no worker node; `cluster.address`, `cluster.env()` (for processes that join it),
    `cluster.profile()` (a raysweep profile describing it)."""

    worker_types: Mapping[str, WorkerType]
    head_cpus: int = 0
    idle_timeout_s: float = 20.0
    """Longer than a node takes to start and get its first work: a node's idle time
    counts from its start, and the autoscaler stops idle nodes even while placement
    groups wait for them (seen with 5 s: a node stopped under the trial placed on it)."""
    name: str = "fake-autoscaling"
    update_interval_s: int = 1
    root: Path = field(init=False)
    port: int = field(init=False, default=0)
    pids: list[int] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        # Short, private (0700): Ray's Unix socket paths live under it.
        self.root = Path(tempfile.mkdtemp(prefix="rs-"))
        self.token = write_token(self.root / "auth_token")
        self.log = self.root / "head.log"
        self._metric_ports = metric_ports()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def max_workers(self) -> int:
        return sum(t.max_workers for t in self.worker_types.values())

    def launcher_config(self) -> dict[str, Any]:
        """The autoscaler's config (complete: the monitor reads it as it is, without the
        defaults file `ray up` would merge in)."""
        types: dict[str, Any] = {HEAD_TYPE: {"resources": {"CPU": self.head_cpus}, "node_config": {},
                                             "max_workers": 0}}
        for name, kind in self.worker_types.items():
            types[name] = {"resources": {**kind.resources, "object_store_memory": kind.object_store_mb << 20},
                           "node_config": {}, "min_workers": kind.min_workers, "max_workers": kind.max_workers}
        return {
            "cluster_name": self.name, "max_workers": self.max_workers, "upscaling_speed": 1.0,
            "idle_timeout_minutes": self.idle_timeout_s / 60,
            "provider": {"type": "fake_multinode", "gcs_address": self.address, "use_node_id_as_ip": True,
                         "disable_node_updaters": True, "disable_launch_config_check": True},
            "auth": {}, "docker": {}, "available_node_types": types, "head_node_type": HEAD_TYPE,
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
            "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }

    def profile(self) -> dict[str, Any]:
        """A raysweep cluster profile (`raysweep.config.profile.ClusterProfile`) that
        joins this cluster and describes its node types, as a launcher config does."""
        return {
            "name": self.name, "address": self.address, "num_cpus": self.head_cpus,
            "max_workers": self.max_workers,
            "node_types": {name: {"resources": dict(kind.resources), "min_workers": kind.min_workers,
                                  "max_workers": kind.max_workers}
                           for name, kind in self.worker_types.items()},
        }

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of this cluster's processes and of every process that joins
        it: its temp folder, its token, loopback only, this interpreter first on PATH."""
        env = dict(os.environ if base is None else base)
        env.pop("RAY_ADDRESS", None)
        env.pop("RAY_AUTH_TOKEN", None)
        path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update({"PATH": path, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(self.root),
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token), **loopback_env(True),
                    **self._metric_ports})
        return env

    def start(self) -> FakeAutoscalingCluster:
        self.port = free_port()
        config = self.root / "autoscaler.yaml"
        config.write_text(json.dumps(self.launcher_config(), indent=2))
        env = {**self.env(), "RAY_FAKE_CLUSTER": "1",
               "AUTOSCALER_UPDATE_INTERVAL_S": str(self.update_interval_s)}
        args = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--disable-usage-stats",
                "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                "--dashboard-host", "127.0.0.1", "--dashboard-port", str(free_port()),
                "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                "--num-cpus", str(self.head_cpus), f"--autoscaling-config={config}"]
        with open(self.log, "ab") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
        self.pids.append(process.pid)
        try:
            _wait_for_port(self.port, START_TIMEOUT_S, self.log)
        except BaseException:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.is_file() else ""
            self.stop()
            raise RuntimeError(f"the autoscaling cluster did not start; its head's log ended:\n{tail}") from None
        return self

    def save_logs(self, dest: Path) -> None:
        """Copy the head's log and the autoscaler's (monitor.*) to `dest` (the temp
        folder goes with the cluster)."""
        dest.mkdir(parents=True, exist_ok=True)
        logs = self.root / "ray" / "session_latest" / "logs"
        for path in [self.log, *logs.glob("monitor*")]:
            with contextlib.suppress(OSError):
                shutil.copy(path, dest / path.name)

    def processes(self) -> list[int]:
        """Every live process of this cluster: the head's session, and the fake
        nodes' processes (they carry this cluster's temp folder in RAY_TMPDIR)."""
        return own_processes(self.pids, self.root)

    def stop(self) -> None:
        """Stop this cluster's processes (the head's group, then any fake node left),
        and remove its temp folder."""
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.processes():
                time.sleep(0.2)
        for pid in self.pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> FakeAutoscalingCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_for_port(port: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(1.0)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"the autoscaling cluster's GCS did not come up on 127.0.0.1:{port} "
                       f"within {timeout:.0f} s; see {log}")


def own_processes(leaders: Iterable[int], temp_dir: Path) -> list[int]:
    """Live processes in the sessions `leaders` started, or whose RAY_TMPDIR is `temp_dir`."""
    sessions, marker = set(leaders), f"RAY_TMPDIR={temp_dir}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rfind(")") + 2:].split()
            if fields[0] == "Z":
                continue
            if int(fields[3]) in sessions or int(fields[2]) in sessions:
                found.append(pid)
            elif marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
        except (OSError, IndexError, ValueError):
            continue
    return found


# --- watching the worker nodes ------------------------------------------------------


class NodeWatcher:
    """A child process that samples the cluster's alive worker nodes every
    `interval_s` into `out` (JSON lines: {"t": unix time, "workers": count})."""

    def __init__(self, cluster: FakeAutoscalingCluster, out: Path, interval_s: float = 0.5) -> None:
        self.out = out
        with open(out.with_suffix(".log"), "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.autoscaler", "watch", cluster.address, str(out),
                 str(interval_s)],
                env=cluster.env(), cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def samples(self) -> list[tuple[float, int]]:
        if not self.out.is_file():
            return []
        rows = [json.loads(line) for line in self.out.read_text().splitlines() if line.strip().endswith("}")]
        return [(row["t"], row["workers"]) for row in rows]

    def wait_for(self, condition: Callable[[list[tuple[float, int]]], bool], timeout: float) -> list[tuple[float, int]]:
        """Samples, once `condition(samples)` holds (or `timeout` passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            samples = self.samples()
            if samples and condition(samples):
                return samples
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        return self.samples()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


@contextlib.contextmanager
def watching(cluster: FakeAutoscalingCluster, out: Path, interval_s: float = 0.5) -> Iterator[NodeWatcher]:
    watcher = NodeWatcher(cluster, out, interval_s)
    try:
        yield watcher
    finally:
        watcher.stop()


def _watch(address: str, out: str, interval_s: float) -> None:
    import logging

    import ray

    from raysweep._upstream.cluster import use_token_auth

    use_token_auth()
    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    with open(out, "a") as handle:
        while True:
            workers = sum(1 for n in ray.nodes()
                          if n.get("Alive") and "node:__internal_head__" not in n.get("Resources", {}))
            handle.write(json.dumps({"t": time.time(), "workers": workers}) + "\n")
            handle.flush()
            time.sleep(interval_s)


# --- what a sweep's MLflow runs say ---------------------------------------------------


def peak_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one instant (an end before a start at
    the same instant)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = running = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "watch":
        _watch(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        sys.exit("usage: python -m tests.support.autoscaler watch ADDRESS OUT INTERVAL_S")
