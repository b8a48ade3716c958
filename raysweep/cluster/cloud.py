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
"""

from __future__ import annotations

import copy
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from raysweep._ray_compat import generate_token
from raysweep.cluster.local import state_dir
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
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_cloud_profile(path: str) -> bool:
    """A Ray cluster launcher config (it has `provider` and `cluster_name`)."""
    return is_launcher_config(read_spec_file(path, what="profile"))


def cluster_dir(name: str) -> Path:
    """This machine's files for cloud cluster `name`: its token and the config `ray` gets."""
    return state_dir() / "clusters" / name


def token_file(name: str) -> Path:
    return cluster_dir(name) / "auth_token"


def cluster_name(raw: dict[str, Any], profile_path: str) -> str:
    name = raw.get("cluster_name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserInputError(
            f"{profile_path}: cluster_name: {name!r} must be letters, digits, '_', '.' or '-' "
            "(it names the cluster's token file)"
        )
    return name


def ensure_cluster_token(name: str) -> Path:
    """The token file of cluster `name`, readable by the user only; made the first time,
    the same file (and token) afterwards."""
    path = token_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, stat.S_IRWXU)
    if not path.is_file():
        tmp = path.with_name(f".auth_token.{os.getpid()}")
        tmp.unlink(missing_ok=True)  # (left by a run that died with this pid)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(generate_token())
            try:
                os.link(tmp, path)  # all or nothing
            except FileExistsError:
                pass  # a concurrent `up` made it first: that token is the cluster's
        finally:
            tmp.unlink(missing_ok=True)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return path


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


def launcher_config(profile_path: str) -> Path:
    """Validate the launcher config, make (or reuse) its cluster's token, and write the
    copy `ray` gets: the same config with file_mounts[REMOTE_TOKEN_PATH] pointing at
    the token file. Returns the copy's path."""
    raw = read_spec_file(profile_path, what="profile")
    name = cluster_name(raw, profile_path)
    _check_start_commands(raw, profile_path)
    config = copy.deepcopy(raw)
    mounts = config.get("file_mounts") or {}
    config["file_mounts"] = {**mounts, REMOTE_TOKEN_PATH: str(ensure_cluster_token(name))}
    validate_launcher_config(copy.deepcopy(config), profile_path)
    out = cluster_dir(name) / "launcher.yaml"
    tmp = out.with_name(f".launcher.yaml.{os.getpid()}")
    tmp.write_text(
        f"# Written by `raysweep cluster up` from {Path(profile_path).resolve()}: the same config,\n"
        f"# with file_mounts[{REMOTE_TOKEN_PATH!r}] pointing at this cluster's token file.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    tmp.replace(out)
    return out


def launcher_command(action: str, profile_path: str) -> list[str]:
    """The `ray` command for `raysweep cluster ACTION PROFILE`: on the copy of the
    profile that carries the cluster's token (see `launcher_config`)."""
    config = str(launcher_config(profile_path))
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
