"""Cloud profiles (Ray cluster launcher configs): validated with Ray's schema, then
handed over to `ray up` / `ray down` / `ray exec`.

The token: token auth is on on every node (RAY_AUTH_MODE=token), so every node
needs the cluster's token, workers included. `raysweep cluster up` makes ONE token
per `cluster_name` on this machine (a 0600 file in the raysweep state dir, made once
and reused by later runs; never ~/.ray/auth_token) and hands Ray a copy of the
launcher config whose `file_mounts` entry for REMOTE_TOKEN_PATH points at that file.
Ray syncs file mounts to the head before its setup commands, and the head's
autoscaler syncs the same remote paths on to each worker before its setup commands;
every node's `ray start` command reads the token through TOKEN_ENV. The token itself
is in no config and on no command line.

The perimeter: `up` refuses, before anything is made, a profile whose nodes Ray would
open to every address. On AWS every node type must name its security group(s) in
SecurityGroupIds (or its NetworkInterfaces' Groups): given none, Ray makes a group
whose rules it writes itself, SSH from 0.0.0.0/0 included, and
`provider.security_group.IpPermissions` only adds rules next to that one (Ray 2.60,
autoscaler/_private/aws/config.py: _create_default_inbound_rules); a rule of
`provider.security_group` open to 0.0.0.0/0 or ::/0 is refused too. On GCP every node
type must name the network or subnetwork of its networkInterfaces, and not the
`default` network (its default-allow-ssh rule lets in 0.0.0.0/0; Ray makes no firewall
rules). The rules themselves live in the cloud (the commands that make them are in
cluster/aws.yaml and cluster/gcp.yaml): raysweep checks what the profile names,
offline. Secrets stay on this machine: the copy's `rsync_exclude` carries
SECRET_EXCLUDES (whatever the profile lists), and a file mount whose source is a
secret is refused.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from raysweep._upstream.cluster import local_provider_state
from raysweep.cluster.auth import cluster_dir, ensure_cluster_token, token_file
from raysweep.cluster.secrets import RSYNC_EXCLUDES, secret_match
from raysweep.config.load import read_spec_file
from raysweep.config.profile import is_launcher_config, validate_launcher_config
from raysweep.errors import UserInputError

REMOTE_TOKEN_PATH = "~/.raysweep/auth_token"
"""Where every node holds the cluster's token (a `file_mounts` target)."""
TOKEN_ENV = "RAY_AUTH_TOKEN_PATH=$HOME/.raysweep/auth_token"
"""What each node's `ray start` command carries: Ray reads the token from the file
RAY_AUTH_TOKEN_PATH names (RAY_AUTH_TOKEN, the value itself, would put the token on
the command line). $HOME, not ~: the launcher's remote shell expands it."""
STATUS_COMMAND = f"RAY_AUTH_MODE=token {TOKEN_ENV} ray status"
JOB_API = "http://127.0.0.1:8265"
"""The head's dashboard (and job API) as `ray dashboard CONFIG` forwards it here over SSH."""
START_COMMANDS = ("head_start_ray_commands", "worker_start_ray_commands")
SECRET_EXCLUDES = RSYNC_EXCLUDES
"""rsync --exclude patterns every launcher copy carries, so neither `ray up`'s upload of
file mounts (the repo: "~/raysweep": ".") nor the head's sync on to the workers sends
them (`secrets`: the same list as the job upload check)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SECURITY_GROUP_ID = re.compile(r"^sg-(?:[0-9a-f]{8}|[0-9a-f]{17})$")


def is_cloud_profile(path: str) -> bool:
    """A Ray cluster launcher config (it has `provider` and `cluster_name`)."""
    return is_launcher_config(read_spec_file(path, what="profile"))


def cluster_name(raw: dict[str, Any], profile_path: str) -> str:
    name = raw.get("cluster_name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserInputError(
            f"{profile_path}: cluster_name: {name!r} must be letters, digits, '_', '.' or '-' "
            "(it names the cluster's token file)"
        )
    return name


def _check_start_commands(raw: dict[str, Any], profile_path: str) -> None:
    """Every node type starts Ray with the head's or the workers' start commands: both
    must point Ray at the token (token auth on and no token: the node cannot join)."""
    for key in START_COMMANDS:
        commands = raw.get(key) or []
        starts = [c for c in commands if isinstance(c, str) and "ray start" in c]
        if not starts or any(TOKEN_ENV not in c for c in starts):
            raise UserInputError(
                f"{profile_path}: {key}: each `ray start` must carry the cluster token: "
                f"add RAY_AUTH_MODE=token {TOKEN_ENV} to it"
            )


def _node_configs(raw: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(field path, node_config) of each node type (malformed ones are left to Ray's
    validation)."""
    types = raw.get("available_node_types")
    if not isinstance(types, dict):
        return []
    return [(f"available_node_types.{name}.node_config", node_type["node_config"])
            for name, node_type in types.items()
            if isinstance(node_type, dict) and isinstance(node_type.get("node_config"), dict)]


def _open_to_all(cidr: Any) -> bool:
    """A CIDR that takes in every address (0.0.0.0/0, ::/0, or any /0)."""
    try:
        return ipaddress.ip_network(str(cidr), strict=False).prefixlen == 0
    except ValueError:
        return False  # (not a CIDR: AWS refuses it)


def _check_aws_perimeter(raw: dict[str, Any], profile_path: str) -> None:
    security_group = raw["provider"].get("security_group")
    rules = security_group.get("IpPermissions") if isinstance(security_group, dict) else None
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        for ranges, key in (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6")):
            blocks = rule.get(ranges) if isinstance(rule, dict) else None
            for j, block in enumerate(blocks if isinstance(blocks, list) else []):
                cidr = block.get(key) if isinstance(block, dict) else None
                if cidr is not None and _open_to_all(cidr):
                    raise UserInputError(
                        f"{profile_path}: provider.security_group.IpPermissions[{i}].{ranges}[{j}].{key}: "
                        f"{cidr!r} lets every address in; allow your own address only (e.g. 203.0.113.7/32)"
                    )
    for field, node_config in _node_configs(raw):
        interfaces = node_config.get("NetworkInterfaces")
        if isinstance(interfaces, list) and interfaces:
            named = [(f"{field}.NetworkInterfaces[{k}].Groups", i.get("Groups") if isinstance(i, dict) else None)
                     for k, i in enumerate(interfaces)]
        else:
            named = [(f"{field}.SecurityGroupIds", node_config.get("SecurityGroupIds"))]
        for where, groups in named:
            if not groups or not isinstance(groups, list):
                raise UserInputError(
                    f"{profile_path}: {where}: missing: without it Ray makes a security group that lets "
                    "SSH in from 0.0.0.0/0; make one that allows SSH from your address only (the commands "
                    "are at the top of cluster/aws.yaml) and list its id here"
                )
            for group in groups:
                if not (isinstance(group, str) and _SECURITY_GROUP_ID.match(group)):
                    raise UserInputError(
                        f"{profile_path}: {where}: {group!r} is not a security group id (sg- and 8 or 17 hex "
                        "digits); make the group (SSH from your address only: the commands are at the top "
                        "of cluster/aws.yaml) and put its id here"
                    )


def _check_gcp_perimeter(raw: dict[str, Any], profile_path: str) -> None:
    for field, node_config in _node_configs(raw):
        interfaces: Any
        if "networkConfig" in node_config and "networkInterfaces" not in node_config:
            key, interfaces = "networkConfig", [node_config["networkConfig"]]  # (a TPU node's)
        else:
            key, interfaces = "networkInterfaces", node_config.get("networkInterfaces")
        if not isinstance(interfaces, list) or not interfaces:
            raise UserInputError(
                f"{profile_path}: {field}.{key}: missing: Ray would put the node on the region's first "
                "subnetwork (usually the `default` network's, whose default-allow-ssh rule lets in 0.0.0.0/0); "
                "name the subnetwork of a network of your own (the gcloud commands are at the top of "
                "cluster/gcp.yaml)"
            )
        for k, interface in enumerate(interfaces):
            where = f"{field}.{key}" + (f"[{k}]" if key == "networkInterfaces" else "")
            interface = interface if isinstance(interface, dict) else {}
            named = {name: interface[name] for name in ("network", "subnetwork") if interface.get(name)}
            if not named:
                raise UserInputError(
                    f"{profile_path}: {where}: names no network or subnetwork, so GCP uses the `default` "
                    "network (its default-allow-ssh rule lets in 0.0.0.0/0); name the subnetwork of a network "
                    "of your own (the gcloud commands are at the top of cluster/gcp.yaml)"
                )
            for name, value in named.items():
                if str(value).rstrip("/").rsplit("/", 1)[-1] == "default":
                    raise UserInputError(
                        f"{profile_path}: {where}.{name}: {value!r} is the `default` network's, whose "
                        "default-allow-ssh rule lets in 0.0.0.0/0; use a network of your own (the gcloud "
                        "commands are at the top of cluster/gcp.yaml)"
                    )


def check_perimeter(raw: dict[str, Any], profile_path: str) -> None:
    """Refuse a launcher config whose nodes Ray would open to every address (see the
    module's docstring): one line naming the file and the field."""
    provider = raw.get("provider")
    kind = provider.get("type") if isinstance(provider, dict) else None
    if kind == "aws":
        _check_aws_perimeter(raw, profile_path)
    elif kind == "gcp":
        _check_gcp_perimeter(raw, profile_path)


def secret_pattern(path: str) -> str | None:
    """The secret pattern a local path (a file, or a folder: every file in it) matches
    by a name in it, or None."""
    local = PurePosixPath(os.path.expanduser(path))
    return secret_match(local) or secret_match(local / "any")


def _check_mount_sources(raw: dict[str, Any], profile_path: str) -> None:
    """A file mount of a secret would carry it to every node, past rsync_exclude (which
    matches names inside the folders synced, not the source's own path)."""
    mounts = raw.get("file_mounts")
    for target, source in (mounts.items() if isinstance(mounts, dict) else []):
        if target == REMOTE_TOKEN_PATH or not isinstance(source, str):
            continue  # (the cluster's token: the one secret that goes, on purpose)
        pattern = secret_pattern(source)
        if pattern:
            raise UserInputError(
                f"{profile_path}: file_mounts[{target!r}]: {source!r} matches {pattern!r}: secrets stay on "
                "this machine; give the nodes their own credentials (an instance profile or service account)"
            )


def launcher_config(profile_path: str, up: bool = True) -> Path:
    """Validate the launcher config (for `up`, its perimeter and file mounts too), make
    (or reuse) its cluster's token, and write the copy `ray` gets: the same config with
    file_mounts[REMOTE_TOKEN_PATH] pointing at the token file and SECRET_EXCLUDES in
    rsync_exclude. Returns the copy's path. (`down` and `status` start no node and
    sync nothing: a cluster made before the perimeter checks can still be torn down.)"""
    raw = read_spec_file(profile_path, what="profile")
    name = cluster_name(raw, profile_path)
    _check_start_commands(raw, profile_path)
    if up:
        check_perimeter(raw, profile_path)
        _check_mount_sources(raw, profile_path)
    config = copy.deepcopy(raw)
    mounts = config.get("file_mounts") or {}
    config["file_mounts"] = {**mounts, REMOTE_TOKEN_PATH: str(ensure_cluster_token(name))}
    excludes = list(config.get("rsync_exclude") or [])
    config["rsync_exclude"] = excludes + [p for p in SECRET_EXCLUDES if p not in excludes]
    validate_launcher_config(copy.deepcopy(config), profile_path)
    out = cluster_dir(name) / "launcher.yaml"
    tmp = out.with_name(f".launcher.yaml.{os.getpid()}")
    tmp.write_text(
        f"# Written by `raysweep cluster up` from {Path(profile_path).resolve()}: the same config,\n"
        f"# with file_mounts[{REMOTE_TOKEN_PATH!r}] pointing at this cluster's token file\n"
        "# and rsync_exclude keeping secret-looking files (SECRET_EXCLUDES) on that machine.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    tmp.replace(out)
    return out


def forget_set_up_machines(profile_path: str) -> Path | None:
    """Before `up` of a `local` provider (machines you own): Ray skips the file mounts
    and setup commands of a machine whose tags (kept on this machine) say it is set up,
    so a head reinstalled, or replaced at the same address, would start without the
    cluster's token ("RAY_AUTH_TOKEN_PATH is set but file cannot be opened"). Forget
    them: `up` sets every machine up again (its commands are idempotent). Returns the
    state file removed, if any."""
    raw = read_spec_file(profile_path, what="profile")
    provider = raw.get("provider")
    if not isinstance(provider, dict) or provider.get("type") != "local":
        return None
    state = local_provider_state(cluster_name(raw, profile_path))
    if not state.exists():
        return None
    state.unlink()
    return state


def stop_workers(profile_path: str, timeout_s: float = 120.0) -> list[str]:
    """After `down` of a `local` provider: `ray stop` on every worker machine over SSH,
    with the profile's user and key. Ray's `ray down` stops Ray on the head only and
    marks the workers terminated in its state; their raylets, agents and actors live on
    (seen: a worker host still running its raylet after `down`). Returns the addresses
    where it failed."""
    raw = read_spec_file(profile_path, what="profile")
    provider, auth = raw.get("provider") or {}, raw.get("auth") or {}
    if provider.get("type") != "local":
        return []
    key = os.path.expanduser(str(auth.get("ssh_private_key", "~/.ssh/id_rsa")))
    user = str(auth.get("ssh_user", os.environ.get("USER", "root")))

    def stop(address: str) -> str | None:
        command = ["ssh", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                   "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
                   "-o", "BatchMode=yes", f"{user}@{address}", "bash --login -c 'ray stop --force'"]
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return address
        return None if done.returncode == 0 else address

    from concurrent.futures import ThreadPoolExecutor

    addresses = [str(a) for a in provider.get("worker_ips") or []]
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(addresses)))) as pool:
        return [a for a in pool.map(stop, addresses) if a is not None]


def launcher_command(action: str, profile_path: str) -> list[str]:
    """The `ray` command for `raysweep cluster ACTION PROFILE`: on the copy of the
    profile that carries the cluster's token (see `launcher_config`)."""
    config = str(launcher_config(profile_path, up=action == "up"))
    ray_cli = str(Path(sys.executable).with_name("ray"))
    if action == "status":
        return [ray_cli, "exec", config, STATUS_COMMAND]
    verbs = {"up": ["up", "-y"], "down": ["down", "-y"]}
    return [ray_cli, *verbs[action], config]


def job_api(profile_path: str) -> tuple[str, Path]:
    """Where `raysweep submit` reaches a cloud cluster's job API (RAY_ADDRESS when it is
    an http(s) address, else the `ray dashboard` tunnel) and the token file to send."""
    raw = read_spec_file(profile_path, what="profile")
    name = cluster_name(raw, profile_path)
    token = token_file(name)
    if not token.is_file():
        raise UserInputError(
            f"{profile_path}: cluster {name!r} has no token at {token} "
            f"(raysweep cluster up {profile_path} makes it)"
        )
    address = os.environ.get("RAY_ADDRESS", "")
    return (address if address.startswith(("http://", "https://")) else JOB_API), token


def launch(command: list[str]) -> bool:
    """Run the `ray` command; True on success."""
    return subprocess.run(command).returncode == 0
