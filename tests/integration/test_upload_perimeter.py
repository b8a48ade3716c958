"""No secrets leave the machine, and nothing the cluster needs stays home: the shipped
cluster/aws.yaml and gcp.yaml's rsync excludes against the repo's tracked files (`git
ls-files`) and a real rsync (the profiles' other checks: tests/unit/test_cloud_perimeter.py)."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from raysweep.cluster import cloud

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
# Files that must never reach a node, at the top of the repo and deeper down.
SECRET_FILES = [".env", ".env.local", "config/.env.production", "tls/server.pem", "tls/server.key",
                "certs/client.p12", ".netrc", ".pgpass", ".git-credentials", "credentials.json",
                "gcp/my-service-account-123.json", "keys/id_rsa", "keys/id_rsa.pub", "id_ed25519",
                "id_ecdsa", ".aws/credentials", ".aws/config", "home/.ssh/known_hosts", ".kube/config",
                "home/.config/gcloud/application_default_credentials.json"]


def _shipped(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _rsync_excluded(relative: str, patterns: list[str]) -> str | None:
    """The rsync --exclude pattern that keeps `relative` (a file under the synced
    folder) from the transfer, or None: rsync's rules for the shapes used here (no
    `/`: any name in the path; trailing `/`: a folder; leading `/`: from the top;
    `a/b/`: a run of names), `*` never crossing a `/`."""
    parts = relative.split("/")
    for pattern in patterns:
        folder_only = pattern.endswith("/")
        anchored = pattern.startswith("/")
        want = pattern.strip("/").split("/")
        # Names the pattern may end on: a folder above the file, or (not folder_only) the file.
        last = len(parts) - (1 if folder_only else 0)
        for end in range(len(want), last + 1):
            start = end - len(want)
            if anchored and start != 0:
                continue
            if all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts[start:end], want, strict=True)):
                return pattern
    return None


def _upload_patterns(name: str) -> list[str]:
    return _shipped(name)["rsync_exclude"]


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_upload_leaves_secrets_home_and_takes_every_tracked_file(name) -> None:
    patterns = _upload_patterns(name)
    assert set(cloud.SECRET_EXCLUDES) <= set(patterns)
    for secret in SECRET_FILES:
        assert _rsync_excluded(secret, patterns), secret
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    sent = [f for f in tracked if not _rsync_excluded(f, patterns)]
    assert not [f for f in tracked if f not in sent and not f.startswith(".git/")], "a tracked file stays home"
    assert "raysweep/data/loader.py" in sent and "constraints.txt" in sent  # (`data` once dropped raysweep/data/)
    for kept in ("data/train/part-0.parquet", "results/run/trial.json", "mlruns/0/meta.yaml"):
        assert _rsync_excluded(kept, patterns), kept
    assert not _rsync_excluded("auth_token", patterns)  # the token's own mount still goes


@pytest.mark.skipif(shutil.which("rsync") is None, reason="no rsync here")
def test_upload_patterns_with_real_rsync(tmp_path) -> None:
    source = tmp_path / "repo"
    for relative in [*SECRET_FILES, "raysweep/data/loader.py", "raysweep/__init__.py", "data/x.parquet"]:
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text("x")
    args = [a for p in _upload_patterns("aws.yaml") for a in ("--exclude", p)]
    (tmp_path / "dest").mkdir()
    subprocess.run(["rsync", "-a", *args, f"{source}/", f"{tmp_path / 'dest'}/"], check=True)
    got = {p.relative_to(tmp_path / "dest").as_posix() for p in (tmp_path / "dest").rglob("*") if p.is_file()}
    assert got == {"raysweep/data/loader.py", "raysweep/__init__.py"}
