"""The cluster token: where it lives and how this process sends it (never printed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from raysweep._ray_compat import generate_token


def token_path() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))


def ensure_token() -> Path | None:
    """A token file readable by the user only (generated if missing); None when the
    token comes from RAY_AUTH_TOKEN."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = token_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_token())
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return path


def token_source() -> str:
    """Where the token lives, for messages (never the token itself)."""
    return "RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else str(token_path())



def token_available() -> bool:
    """A token reaches this process the way Ray documents: env var or token file."""
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or token_path().is_file()
