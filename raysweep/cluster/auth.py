"""The cluster token: where it lives and how this process sends it (never printed).

Every cluster raysweep starts has its own token: a 0600 file in the cluster's own
state folder (`$RAYSWEEP_STATE_DIR/clusters/<name>/auth_token`, default
`~/.raysweep/...`) for `raysweep cluster up` clusters, local and cloud, and a 0600 file
in the in-process cluster's private temp folder for the cluster a run starts itself.
Never `~/.ray/auth_token`, which every cluster on the machine would share. A token the
user sets in RAY_AUTH_TOKEN still wins over all of them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from raysweep._upstream.cluster import generate_token


def state_dir() -> Path:
    """raysweep's state on this machine: clusters' state files, tokens, logs."""
    return Path(os.environ.get("RAYSWEEP_STATE_DIR", Path.home() / ".raysweep"))


def cluster_dir(name: str) -> Path:
    """This machine's files for cluster `name` (local or cloud): its token, and for a
    cloud cluster the launcher config `ray` gets."""
    return state_dir() / "clusters" / name


def token_file(name: str) -> Path:
    return cluster_dir(name) / "auth_token"


def write_token(path: Path) -> Path:
    """A new token in `path`, mode 600 in a 700 folder; an existing file is kept (it is
    the cluster's token). All or nothing: a concurrent writer's token wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, stat.S_IRWXU)
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)  # (left by a run that died with this pid)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(generate_token())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return path


def ensure_cluster_token(name: str) -> Path:
    """The token file of cluster `name`: made the first time, the same file after."""
    return write_token(token_file(name))


def token_env(path: Path) -> dict[str, str]:
    """The environment that makes Ray processes send (and nodes require) the token in
    `path`; empty of RAY_AUTH_TOKEN_PATH when the user set RAY_AUTH_TOKEN (it wins)."""
    env = {"RAY_AUTH_MODE": "token"}
    if not os.environ.get("RAY_AUTH_TOKEN"):
        env["RAY_AUTH_TOKEN_PATH"] = str(path)
    return env


def token_path() -> Path:
    """The token file this process sends (Ray's own lookup order after RAY_AUTH_TOKEN)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))


def token_available() -> bool:
    """A token reaches this process the way Ray documents: env var or token file."""
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or token_path().is_file()
