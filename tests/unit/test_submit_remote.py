"""What a job submitted to a cluster of other machines gets: no path of this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysweep.cluster.submit import in_upload, job_env
from raysweep.errors import UserInputError


@pytest.fixture(autouse=True)
def _no_user_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MLFLOW_TRACKING_URI", "RAYSWEEP_BASE_DIR"):
        monkeypatch.delenv(key, raising=False)


def test_a_local_cluster_shares_this_folder(tmp_path: Path) -> None:
    env = job_env(tmp_path)
    assert env["RAYSWEEP_BASE_DIR"] == str(tmp_path)
    assert env["MLFLOW_TRACKING_URI"].startswith("sqlite:///")


@pytest.mark.parametrize("uri, says", [
    (None, "is not set"),
    ("sqlite:////home/me/proj/mlflow.db", "a file on this machine"),
    ("mlruns", "a file on this machine"),
    ("file:///home/me/mlruns", "a file on this machine"),
    ("http://127.0.0.1:5000", "loopback"),
    ("http://localhost:5000", "loopback"),
])
def test_a_remote_cluster_refuses_a_laptop_only_tracking_store(tmp_path, monkeypatch, uri, says) -> None:
    if uri is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(UserInputError, match=says) as error:
        job_env(tmp_path, remote=True)
    assert "MLFLOW_TRACKING_URI" in str(error.value) and "\n" not in str(error.value)


def test_a_remote_cluster_gets_no_laptop_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("RAYSWEEP_BASE_DIR", str(tmp_path))  # even one the user set here
    env = job_env(tmp_path, remote=True)
    assert env == {"RAY_TRAIN_V2_ENABLED": "1", "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"}


def test_spec_and_profile_travel_inside_the_upload(tmp_path: Path) -> None:
    (tmp_path / "cluster").mkdir()
    assert in_upload("cluster/onprem.yaml", tmp_path, "cluster profile") == "cluster/onprem.yaml"
    assert in_upload(str(tmp_path / "cluster" / "onprem.yaml"), tmp_path, "profile") == "cluster/onprem.yaml"
    with pytest.raises(UserInputError, match=r"outside .* the working dir the job uploads"):
        in_upload(str(tmp_path.parent / "elsewhere.yaml"), tmp_path, "cluster profile")
    with pytest.raises(UserInputError, match="outside"):
        in_upload("../up.yaml", tmp_path, "spec")
