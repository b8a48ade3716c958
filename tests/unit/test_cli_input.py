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
    assert "ok: trainer raysweep.testing.probe, 3 features, 203 train rows" in capsys.readouterr().out


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
    from raysweep.config.profile import load_profile

    profile = load_profile(Path(__file__).resolve().parents[2] / "cluster" / "local.yaml")
    assert profile.address is None and profile.host == "127.0.0.1"


@pytest.mark.parametrize("argv", [["reproduce", "no-such-run"], ["report", "no-such-run"],
                                  ["register", "no-such-run"]])
def test_unknown_run_or_sweep_is_one_line_exit_2(argv, tmp_path, monkeypatch, capsys):
    from raysweep.tracking.store import RunStore

    missing = tmp_path / "elsewhere" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no MLflow store" in err, err
    assert not missing.exists(), "a lookup created a store"

    missing.parent.mkdir()
    RunStore(f"sqlite:///{missing}", "other")  # a store with no such run
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "'no-such-run'" in err and "raysweep runs" in err and "mlflow ui" in err


def test_record_comparisons_name_what_differs():
    from raysweep.tracking.record import compare_data, compare_versions

    files = {"train": [{"path": "/d/a.parquet", "size": 10, "rows": 5, "sha256": "x"}], "validation": []}
    changed = {"train": [{"path": "/d/a.parquet", "size": 10, "rows": 5, "sha256": "y"},
                         {"path": "/d/b.parquet", "size": 1, "rows": 1, "sha256": "z"}], "validation": []}
    old, new = {"schema_sha256": "s", "files": files}, {"schema_sha256": "t", "files": changed}
    assert compare_data(old, new) == ["the schema of the data changed", "/d/b.parquet is new",
                                      "/d/a.parquet changed (sha256)"]
    assert compare_data(old, old) == []
    assert compare_versions({"torch": "2.13.0", "ray": "2.60.0", "raysweep": "0.1"},
                            {"torch": "2.14.0", "ray": "2.60.0", "raysweep": "0.2"}) == ["torch 2.13.0 -> 2.14.0"]


@pytest.mark.parametrize("function, words", [
    ("trainers.does_not_exist:widths", "space_function: cannot import 'trainers.does_not_exist:widths': "
                                       "ModuleNotFoundError"),
    ("trainers.digits_mlp:no_such_function", "space_function: cannot import 'trainers.digits_mlp:no_such_function'"),
    ("trainers.digits_mlp:build_model", "space_function: trainers.digits_mlp:build_model failed on a trial"),
])
def test_a_space_function_that_cannot_run_is_one_line_exit_2(capsys, write_spec, function, words) -> None:
    path = write_spec(space_function=function)
    code, err = _run(capsys, "tune", str(path))
    assert code == 2 and err.startswith(f"raysweep: error: {path}: {words}") and "\n" not in err, err


@pytest.mark.parametrize("argv, words", [
    (["--pick", "val_loss"], "--pick val_loss: needs --register"),
    (["--register", "--pick", "val_accuracy"], "--pick val_accuracy: not an objective of this sweep"),
])
def test_pick_needs_register_and_an_objective(capsys, write_spec, argv, words) -> None:
    path = write_spec()
    code, err = _run(capsys, "tune", str(path), *argv)
    assert code == 2 and err.startswith(f"raysweep: error: {words}") and "\n" not in err, err


def test_a_warm_group_for_a_lightning_module_is_one_line_exit_2(capsys, write_spec) -> None:
    """Warm groups run plain train(ctx) trainers; a LightningModule is refused up front."""
    path = write_spec(trainer="trainers.digits_mlp_lightning")
    code, err = _run(capsys, "tune", str(path), "--set", "scaling.num_workers=2", "--set",
                     "scaling.worker_group=warm")
    assert code == 2 and "\n" not in err
    assert err.startswith(f"raysweep: error: {path}: scaling.worker_group: warm groups run plain train(ctx)")


def test_which_execution_mode_a_trial_gets() -> None:
    from raysweep.config.spec import ScalingSpec
    from raysweep.driver.plan import execution_mode
    from raysweep.worker.plan import ExecutionMode

    def mode(driver: dict[str, float] | None = None, **scaling) -> ExecutionMode:
        return execution_mode(ScalingSpec(**scaling), driver)

    assert mode() is mode(worker_group="warm") is ExecutionMode.IN_TRIAL
    assert mode(num_workers=2) is mode(worker_group="always") is ExecutionMode.WORKER_GROUP
    assert mode(num_workers=2, worker_group="warm") is ExecutionMode.WARM_GROUP
    # (trial drivers pinned to nodes that may have no CPU to train on: Train's group)
    assert mode({"on_demand": 0.01}, num_workers=2, worker_group="warm") is ExecutionMode.WORKER_GROUP


def test_an_elastic_run_is_num_workers_min_max_or_min_workers(capsys, write_spec) -> None:
    from raysweep.config.spec import ScalingSpec
    from raysweep.driver.plan import execution_mode
    from raysweep.worker.plan import ExecutionMode, Placement

    elastic = ScalingSpec.model_validate({"num_workers": [1, 3]})
    assert (elastic.min_workers, elastic.num_workers) == (1, 3)
    assert ScalingSpec(num_workers=3, min_workers=2).min_workers == 2
    assert execution_mode(elastic) is ExecutionMode.WORKER_GROUP
    assert Placement(num_workers=3, min_workers=1).elastic and not Placement(num_workers=2, min_workers=2).elastic
    for scaling, said in [({"num_workers": [3, 2]}, "scaling: min_workers (3) must be <= num_workers (2)"),
                          ({"num_workers": [1, 2, 3]}, "num_workers: a number or [min, max], got [1, 2, 3]"),
                          ({"num_workers": [1, 2], "worker_group": "warm"},
                           "min_workers: elastic runs resize Ray Train worker groups")]:
        path = write_spec(scaling=scaling)
        code, err = _run(capsys, "check", str(path))
        assert code == 2 and "\n" not in err and err.startswith(f"raysweep: error: {path}: "), err
        assert said in err, err
