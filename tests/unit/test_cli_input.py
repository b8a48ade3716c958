"""Bad input exits 2 with one line, before Ray starts or any MLflow run exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
import yaml

from raysweep.cli import main


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ray_was_up = ray.is_initialized()
    yield
    assert ray.is_initialized() == ray_was_up, "bad input started Ray"
    assert not os.path.exists(tmp_path / "mlflow.db")
    assert not os.path.exists(tmp_path / "results")


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("command", ["check", "train", "tune"])
def test_missing_spec(capsys, command) -> None:
    code, err = _run(capsys, command, "nope.yaml")
    assert code == 2 and err == "raysweep: error: nope.yaml: spec file not found"


@pytest.mark.parametrize("command", ["train", "tune"])
def test_trainer_that_cannot_be_imported(capsys, write_spec, command) -> None:
    path = write_spec(trainer="trainers.does_not_exist")
    code, err = _run(capsys, command, str(path))
    assert code == 2
    assert err.startswith(f"raysweep: error: {path}: trainer: cannot import 'trainers.does_not_exist'")
    assert "\n" not in err


@pytest.mark.parametrize("command", ["train", "tune"])
def test_bad_column_via_set(capsys, write_spec, command) -> None:
    code, err = _run(capsys, command, str(write_spec()), "--set", "data.label=nope")
    assert code == 2 and "column 'nope' (data.label) not found" in err and "\n" not in err


def test_data_path_without_parquet(capsys, write_spec, tmp_path) -> None:
    code, err = _run(capsys, "tune", str(write_spec()), "--set", f"data.validation={tmp_path}/none")
    assert code == 2 and "data.validation: no Parquet files at" in err


def test_unknown_key(capsys, write_spec, tmp_path) -> None:
    path = write_spec()
    raw = yaml.safe_load(path.read_text())
    raw["scaling"]["num_gpus"] = 1
    path.write_text(yaml.safe_dump(raw))
    code, err = _run(capsys, "tune", str(path))
    assert code == 2 and err == f"raysweep: error: {path}: scaling.num_gpus: unknown key"


def test_check_ok(capsys, write_spec) -> None:
    assert main(["check", str(write_spec())]) == 0
    assert "ok: trainer raysweep.testing, 3 features, 203 train rows" in capsys.readouterr().out


def test_profile_with_unknown_key(capsys, write_spec, tmp_path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text("name: x\nnum_cpu: 2\n")
    code, err = _run(capsys, "tune", str(write_spec()), "--cluster", str(profile))
    assert code == 2 and err == f"raysweep: error: {profile}: num_cpu: unknown key"


def test_profile_with_wrong_type(capsys, write_spec, tmp_path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text("name: x\nnum_cpus: lots\n")
    code, err = _run(capsys, "train", str(write_spec()), "--cluster", str(profile))
    assert code == 2 and err.startswith(f"raysweep: error: {profile}: num_cpus:")


def test_shipped_local_profile_loads() -> None:
    from raysweep.profile import load_profile

    profile = load_profile(Path(__file__).resolve().parents[2] / "cluster" / "local.yaml")
    assert profile.address is None and profile.host == "127.0.0.1"
