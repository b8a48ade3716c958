"""Secret-looking file names: the one list that `.rayignore`, the job upload check
(`submit`) and the cloud profiles' rsync excludes (`cloud`) all follow."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path, PurePath

SECRET_FILES = (".env", ".env.*", "*.pem", "*.key", "*.p12", ".netrc", ".pgpass", ".git-credentials",
                "credentials.json", "*service-account*.json", "id_rsa*", "id_ed25519*", "id_ecdsa*",
                ".envrc", "key.json", ".databrickscfg", ".npmrc", ".pypirc", "kubeconfig", "*.kubeconfig")
"""File names (matched case-insensitively, at any depth). `key.json`: the name GCP's
docs give a service-account key."""
SECRET_DIRS = (".aws", ".ssh", ".kube", ".config/gcloud", ".docker", ".huggingface", ".cache/huggingface")
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


PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
SERVICE_ACCOUNT = re.compile(rb'"type"\s*:\s*"service_account"')
CONTENT_BYTES = 64 * 1024
"""How much of a file the content check reads (keys and key files are small)."""


def secret_content(data: bytes) -> str | None:
    """What secret `data` holds, by content: a PEM private key or a service-account
    key (JSON whose "type" is service_account); None if neither."""
    if PRIVATE_KEY.search(data):
        return "a private key"
    if SERVICE_ACCOUNT.search(data):
        return "a service-account key"
    return None


def secret_file(path: Path, relative: PurePath) -> str | None:
    """Why the file at `path` is a secret, by name (secret_match) or by its first
    CONTENT_BYTES (secret_content); None if it looks like none."""
    pattern = secret_match(relative)
    if pattern is not None:
        return f"matches {pattern}"
    try:
        with open(path, "rb") as handle:
            found = secret_content(handle.read(CONTENT_BYTES))
    except OSError:
        return None
    return f"holds {found}" if found else None


def scrub_diff(diff: str) -> str:
    """A `git diff` without the sections of secret-looking files (by name or content):
    what is attached to a run's MLflow record. Each dropped file leaves one line."""
    kept: list[str] = []
    for section in re.split(r"(?m)^(?=diff --git )", diff):
        header = re.match(r"diff --git a/(\S+) b/(\S+)", section)
        if header is not None:
            name = header.group(2)
            why = secret_match(PurePath(name))
            if why is None:
                found = secret_content(section.encode(errors="replace"))
                why = found and f"holds {found}"
            else:
                why = f"matches {why}"
            if why:
                kept.append(f"diff --git a/{name} b/{name}\n# (left out: {why})\n")
                continue
        kept.append(section)
    return "".join(kept)
