"""Secret-looking file names: the one list that `.rayignore`, the job upload check
(`submit`) and the cloud profiles' rsync excludes (`cloud`) all follow."""

from __future__ import annotations

import fnmatch
from pathlib import PurePath

SECRET_FILES = (".env", ".env.*", "*.pem", "*.key", "*.p12", ".netrc", ".pgpass", ".git-credentials",
                "credentials.json", "*service-account*.json", "id_rsa*", "id_ed25519*", "id_ecdsa*")
"""File names (matched case-insensitively, at any depth)."""
SECRET_DIRS = (".aws", ".ssh", ".kube", ".config/gcloud")
"""Folders whose whole content is secret (a run of names for `a/b`)."""
RSYNC_EXCLUDES = (".env*", *SECRET_FILES[2:], *(f"{folder}/" for folder in SECRET_DIRS))
"""The same as rsync --exclude patterns (a name anywhere in the tree; `dir/`: a folder)."""


def secret_match(relative: PurePath) -> str | None:
    """The pattern a path matches by name: its file name (SECRET_FILES) or a folder
    it is in (SECRET_DIRS, shown with a trailing `/`); None if none."""
    parts = [part.lower() for part in relative.parts]
    if not parts:
        return None
    for pattern in SECRET_FILES:
        if fnmatch.fnmatchcase(parts[-1], pattern):
            return pattern
    folders = parts[:-1]
    for pattern in SECRET_DIRS:
        want = pattern.split("/")
        if any(folders[i:i + len(want)] == want for i in range(len(folders) - len(want) + 1)):
            return pattern + "/"
    return None
