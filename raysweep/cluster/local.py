"""`raysweep cluster up|down|status` for local profiles: `ray start` processes on this machine.

`up` starts a head and the profile's worker nodes as separate `ray start --block`
processes (each in its own process group), bound to the profile's host
(127.0.0.1), with token authentication on. It records their process ids in a state
file; `down` stops exactly those process groups and nothing else.

Each cluster is its own: its own token (`clusters/<name>/auth_token` in the state
folder), its own Ray temp folder (RAY_TMPDIR: session folders, sockets and the
`ray_current_cluster` file Ray's own actors look their cluster up in), explicit
addresses. Two clusters on one machine do not cross. A single-node cluster binds
every socket to loopback (see `isolation.loopback_env`); a multi-node one cannot (Ray
aborts worker nodes then), and `up` names what it binds beyond loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from raysweep.cluster.auth import ensure_cluster_token, state_dir, token_env, token_file
from raysweep.cluster.isolation import free_port, loopback_env, metric_ports
from raysweep.cluster.sockets import Listener, beyond_loopback, in_groups, listening
from raysweep.config.profile import ClusterProfile, load_profile
from raysweep.errors import RunFailedError, UserInputError

START_TIMEOUT_S = 90.0
STOP_GRACE_S = 10.0


@dataclass
class ClusterState:
    name: str
    address: str
    dashboard: str
    pids: list[int]
    logs: list[str]
    temp_dir: str = ""
    """The cluster's own Ray temp folder (RAY_TMPDIR of every node)."""
    single_node: bool = True
    metric_ports: dict[str, str] = field(default_factory=dict)
    """The head's Prometheus ports (Ray's defaults are one per machine)."""
    exposed: list[str] = field(default_factory=list)
    """Sockets the cluster binds beyond loopback (multi-node clusters), as `up` saw them."""

    @classmethod
    def path(cls, name: str) -> Path:
        return state_dir() / "clusters" / f"{name}.json"

    @classmethod
    def load(cls, name: str) -> ClusterState | None:
        path = cls.path(name)
        return cls(**json.loads(path.read_text())) if path.is_file() else None

    def save(self) -> None:
        path = self.path(self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    def alive(self) -> list[int]:
        return [pid for pid in self.pids if _group_alive(pid)]


def cluster_at(address: str) -> ClusterState | None:
    """The running cluster `raysweep cluster up` started at `address` (its GCS
    host:port or its dashboard URL), if any."""
    for path in sorted((state_dir() / "clusters").glob("*.json")):
        state = ClusterState.load(path.stem)
        if state is not None and address in (state.address, state.dashboard) and state.alive():
            return state
    return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def cluster_env(state: ClusterState) -> dict[str, str]:
    """The environment of the cluster's nodes and of every process that talks to it
    from here: its token, its Ray temp folder, and this interpreter's bin dir first
    on PATH so a job's `python` is the one raysweep is installed in. Jobs' drivers
    inherit it from the nodes. A single-node cluster keeps every socket on loopback
    (`isolation.loopback_env`); a multi-node one cannot (a worker node resolves the
    head's 127.0.0.1 to the machine's address), so its nodes bind the machine's
    address, every socket but the metrics exporters checking the token; the nodes'
    metrics exporters are off, the head's two (autoscaler, dashboard) stay."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": state.temp_dir,
           **token_env(token_file(state.name)), **loopback_env(state.single_node), **state.metric_ports}
    if not state.single_node:
        env["RAY_enable_metrics_collection"] = "0"
    return env


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _wait_for_port(host: str, port: int, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(1.0)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.5)
    raise RunFailedError(f"{what} did not come up on {host}:{port} within {timeout:.0f} s; see {log}")


def _start(args: list[str], log: Path, state: ClusterState) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [_ray_cli(), "start", "--block", "--disable-usage-stats", *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=cluster_env(state), start_new_session=True,
        )
    return process.pid



def _node_port_args(host: str) -> list[str]:
    """Each node's dashboard agent gets its own HTTP port: Ray's default (52365) is
    one per machine, so a second node (or a second cluster) would lose its agent and
    the job API answers "No available agent to submit job"."""
    return ["--dashboard-agent-listen-port", str(free_port(host))]


def _resource_args(num_cpus: int | None, num_gpus: int | None, resources: dict[str, float]) -> list[str]:
    args = []
    if num_cpus is not None:
        args += ["--num-cpus", str(num_cpus)]
    if num_gpus is not None:
        args += ["--num-gpus", str(num_gpus)]
    if resources:
        args += ["--resources", json.dumps(resources)]
    return args


def up(profile: ClusterProfile) -> ClusterState:
    existing = ClusterState.load(profile.name)
    if existing is not None and existing.alive():
        raise UserInputError(
            f"cluster {profile.name!r} is already up at {existing.address} "
            f"(raysweep cluster down to stop it)"
        )
    if profile.address is not None:
        raise UserInputError(f"profile {profile.name!r} joins {profile.address}; there is nothing to start")
    ensure_cluster_token(profile.name)
    host, logs_dir = profile.host, state_dir() / "logs" / profile.name
    address = f"{host}:{profile.port}"
    pids: list[int] = []
    logs: list[str] = []
    # Short, private (0700), in the system temp dir: Ray's Unix socket paths live under it.
    temp = tempfile.mkdtemp(prefix="rs-")
    state = ClusterState(profile.name, address, f"http://{host}:{profile.dashboard_port}", pids, logs,
                         temp_dir=temp, single_node=not profile.worker_nodes, metric_ports=metric_ports(host))
    try:
        head_log = logs_dir / "head.log"
        pids.append(_start([
            "--head", "--node-ip-address", host, "--port", str(profile.port),
            "--dashboard-host", host, "--dashboard-port", str(profile.dashboard_port),
            "--ray-client-server-port", str(free_port(host)),
            *_node_port_args(host),
            *_resource_args(profile.num_cpus, profile.num_gpus, profile.resources),
        ], head_log, state))
        logs.append(str(head_log))
        state.save()
        _wait_for_port(host, profile.port, START_TIMEOUT_S, "the head's GCS", head_log)
        _wait_for_port(host, profile.dashboard_port, START_TIMEOUT_S, "the dashboard", head_log)
        for index, node in enumerate(profile.worker_nodes):
            log = logs_dir / f"worker-{index}.log"
            pids.append(_start([
                "--address", address, "--node-ip-address", host, *_node_port_args(host),
                *_resource_args(node.num_cpus, node.num_gpus, node.resources),
            ], log, state))
            logs.append(str(log))
            state.save()
            # One at a time: nodes starting together on one machine race for the
            # session's plasma-store socket names ("bind: Address already in use").
            wait_for_nodes(state, 2 + index, START_TIMEOUT_S)
        if not profile.worker_nodes:
            wait_for_nodes(state, 1, START_TIMEOUT_S)
        state.exposed = sorted({f"{item.bind} ({item.process})" for item in beyond_loopback(sockets(state))})
        state.save()
    except BaseException:
        down(profile.name)
        raise
    return state


def sockets(state: ClusterState) -> list[Listener]:
    """Every listening TCP socket of the cluster's processes."""
    return listening(in_groups(state.alive()))


def wait_for_nodes(state: ClusterState, count: int, timeout: float) -> None:
    """Block until `count` nodes are alive (asked in a child process, no Ray here)."""
    address = state.address
    code = (
        "import ray, sys, time\n"
        f"ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False)\n"
        f"deadline = time.monotonic() + {timeout}\n"
        f"while sum(n['Alive'] for n in ray.nodes()) < {count}:\n"
        "    if time.monotonic() > deadline: sys.exit(1)\n"
        "    time.sleep(0.5)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=cluster_env(state),
                            capture_output=True, text=True, timeout=timeout + 60)
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] if result.stderr.strip() else []
        raise RunFailedError(f"{count} nodes did not join {address} within {timeout:.0f} s {detail}")


def down(name: str) -> list[int]:
    """Stop the process groups `up` started; returns the ids stopped."""
    state = ClusterState.load(name)
    if state is None:
        raise UserInputError(f"cluster {name!r} is not up (no state at {ClusterState.path(name)})")
    _stop_groups(list(reversed(state.pids)))  # (signalled workers first, then the head)
    if state.temp_dir and Path(state.temp_dir).name.startswith("rs-"):
        shutil.rmtree(state.temp_dir, ignore_errors=True)
    ClusterState.path(name).unlink(missing_ok=True)
    return state.pids


def _stop_groups(pgids: list[int]) -> None:
    """SIGTERM every node's process group at once, wait up to STOP_GRACE_S for all of
    them (a raylet takes about 10 s to leave on SIGTERM), then SIGKILL what is left.
    One node after the other, a 3-node cluster took three grace periods to go down."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        left = []
        for pgid in pgids:
            try:
                os.killpg(pgid, sig)
                left.append(pgid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            for pgid in left:
                try:
                    os.waitpid(pgid, os.WNOHANG)  # a leader of this process's own: reaped
                except ChildProcessError:
                    pass
            left = [pgid for pgid in left if _group_alive(pgid)]
        if not left:
            return
        pgids = left


def status(state: ClusterState) -> list[dict]:
    """The cluster's nodes: id, address, alive, resources (asked in a child process)."""
    code = (
        "import json, ray\n"
        f"ray.init(address={state.address!r}, logging_level='ERROR', log_to_driver=False)\n"
        "print(json.dumps([{'node_id': n['NodeID'][:12], 'address': n['NodeManagerAddress'],\n"
        "  'alive': n['Alive'], 'resources': {k: v for k, v in n['Resources'].items()\n"
        "  if not k.startswith('node:') and k != 'object_store_memory' and k != 'memory'}}\n"
        "  for n in ray.nodes()]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=cluster_env(state),
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RunFailedError(f"cannot reach the cluster at {state.address}: {result.stderr.strip()[-300:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cluster_up(profile_path: str) -> str:
    """`raysweep cluster up PROFILE`: start it; returns what to tell the user."""
    profile = load_profile(profile_path)
    state = up(profile)
    token = "RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else str(token_file(profile.name))
    lines = [
        f"cluster {profile.name!r} is up: {len(state.pids)} node(s), address {state.address}, "
        f"dashboard and job API {state.dashboard} (token auth on; token in {token})",
        f"  submit: raysweep submit SPEC --cluster {profile_path}",
        f"      or: RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token_file(profile.name)} RAY_ADDRESS={state.dashboard} "
        "ray job submit --working-dir . -- python -m raysweep tune SPEC",
        f"  stop:   raysweep cluster down {profile_path}",
    ]
    if state.exposed:
        lines.append(f"  {len(state.exposed)} sockets listen beyond loopback (a worker node needs the machine's "
                     "address); the head's metrics ports answer without the token: firewall them (README, Security):")
        lines += [f"    {item}" for item in state.exposed]
    else:
        lines.append("  every socket of the cluster listens on loopback only")
    return "\n".join(lines)


def cluster_down(profile_path: str) -> str:
    profile = load_profile(profile_path)
    pids = down(profile.name)
    return f"cluster {profile.name!r} is down: stopped process groups {', '.join(map(str, pids))}"


def cluster_status(profile_path: str) -> str:
    profile = load_profile(profile_path)
    state = ClusterState.load(profile.name)
    if state is None or not state.alive():
        raise UserInputError(f"{profile_path}: cluster {profile.name!r} is not up")
    lines = [f"cluster {profile.name!r}: address {state.address}, dashboard {state.dashboard}"]
    for node in status(state):
        resources = " ".join(f"{k}={v:g}" for k, v in sorted(node["resources"].items()))
        lines.append(f"  node {node['node_id']} {node['address']} {'alive' if node['alive'] else 'dead'}: {resources}")
    return "\n".join(lines)
