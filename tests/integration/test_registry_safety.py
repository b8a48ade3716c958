"""`raysweep register` trusts nothing a run recorded: the model is logged in the pt2
(torch.export) format even where MLflow's default would be pickle, and loads with
MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false; a recorded trainer name that is not a dotted
module name resolving to a module file is refused before anything imports it.

One `raysweep train` run of the probe trainer on the shared cluster, registered and
then tampered with."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from raysweep import registry
from raysweep.cli import main
from raysweep.errors import UserInputError
from raysweep.registry import build_from_checkpoint, check_trainer_name, register
from raysweep.testing.helpers import only_run
from raysweep.testing.probe import probe_spec


@pytest.fixture(scope="module")
def trained(ray_cluster, probe_data: Path, tmp_path_factory: pytest.TempPathFactory,
            mlflow_stores) -> Iterator[tuple[str, str]]:
    """(tracking URI, run id) of one finished probe training run with a checkpoint."""
    tmp = tmp_path_factory.mktemp("registry")
    uri = mlflow_stores.new(tmp / "mlflow.db")
    spec = tmp / "spec.yaml"
    spec.write_text(yaml.safe_dump(probe_spec(probe_data, tmp / "results", tmp / "probe")))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        assert main(["train", str(spec), "--set", "scheduler.max_epochs=1"]) == 0
        run = only_run(uri)
        assert run.info.status == "FINISHED" and "raysweep.checkpoint" in run.data.tags
        yield uri, run.info.run_id


def test_the_registered_model_is_pt2_and_loads_without_pickle(trained, tmp_path, monkeypatch) -> None:
    uri, run_id = trained
    # As on a Databricks tracking URI, where MLflow's default format is pickle: register
    # names pt2 itself, so the model is still the exported graph.
    with monkeypatch.context() as databricks:
        databricks.setattr(mlflow.pytorch, "is_databricks_uri", lambda _uri: True)
        assert mlflow.pytorch._get_default_serialization_format(False) == "pickle"
        registered = register(run_id, "pt2-probe")
    assert registered.version == "1"

    local = Path(mlflow.artifacts.download_artifacts(registered.model_uri, dst_path=str(tmp_path / "model"),
                                                     tracking_uri=uri))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    data = mlmodel["flavors"]["pytorch"]["model_data"]
    # MLflow 3.17's MLmodel names no format: the pt2 format is the torch.export archive
    # `model.pt2` as the flavor's only data (pickle writes model.pth + pickle_module_info.txt).
    assert sorted(p.name for p in (local / data).iterdir()) == ["model.pt2"]

    # Loaded with pickle refused: MLflow checks the archive holds no pickle, then loads it.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    loaded = mlflow.pytorch.load_model("models:/pt2-probe/1")
    checkpoint = MlflowClient(uri).get_run(run_id).data.tags["raysweep.checkpoint"]
    original = build_from_checkpoint("raysweep.testing.probe", {}, checkpoint)
    batch = torch.linspace(-2, 2, 24).reshape(8, 3)  # (row_id, x0, x1)
    with torch.no_grad():
        assert torch.allclose(loaded(batch), original(batch), rtol=1e-6, atol=1e-7)

    # The setting is in effect: a pickled model is refused under it.
    pickled = tmp_path / "pickled"
    mlflow.pytorch.save_model(original, str(pickled), serialization_format="pickle")
    with pytest.raises(MlflowException, match="Deserializing model using pickle is disallowed"):
        mlflow.pytorch.load_model(str(pickled))


def _rewrite_trainer(uri: str, run_id: str, trainer: object, folder: Path) -> None:
    """The run's record.json artifact, its spec.trainer replaced (as anyone able to write
    to the tracking store could)."""
    client = MlflowClient(uri)
    path = Path(client.download_artifacts(run_id, "record.json", str(folder)))
    record = json.loads(path.read_text())
    record["spec"]["trainer"] = trainer
    path.write_text(json.dumps(record))
    client.log_artifact(run_id, str(path))


@pytest.mark.parametrize("trainer", ["os; rm -rf", "../evil", "evil/../../x", "__import__('os').system('id')",
                                     "trainers.def", "trainers.no_such_trainer", "no_such_package.trainer", "sys"])
def test_a_tampered_trainer_name_is_refused_before_any_import(trained, tmp_path, monkeypatch, capsys,
                                                              trainer) -> None:
    uri, run_id = trained
    imported: list[str] = []
    monkeypatch.setattr(registry, "import_trainer", lambda name: imported.append(name))
    modules = set(sys.modules)
    _rewrite_trainer(uri, run_id, trainer, tmp_path / "tampered")
    try:
        with pytest.raises(UserInputError) as refused:
            register(run_id, "tampered")
        message = str(refused.value)
        assert message.startswith(f"run {run_id!r}: its recorded trainer (record.json spec.trainer) {trainer!r} ")
        assert "not imported" in message
        assert "\n" not in message and imported == []
        assert not {m for m in set(sys.modules) - modules if "evil" in m or "no_such" in m}

        capsys.readouterr()
        assert main(["register", run_id, "--name", "tampered"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"run {run_id!r}: its recorded trainer" in err
        assert imported == [] and not MlflowClient(uri).search_registered_models("name = 'tampered'")
    finally:
        _rewrite_trainer(uri, run_id, "raysweep.testing.probe", tmp_path / "restored")


def test_a_spec_trainer_name_passes() -> None:
    for name in ("trainers.digits_mlp", "trainers.digits_mlp_lightning", "raysweep.testing.probe"):
        assert check_trainer_name("r", name) == name
    for name in ("", ".trainers", "trainers.", "trainers..x", "1abc", "trainers.digits-mlp", "träiners",
                 "trainers.digits_mlp ", None, 3, "x" * 201):
        with pytest.raises(UserInputError, match="is not a dotted Python module name"):
            check_trainer_name("r", name)


def test_a_register_that_fails_leaves_the_run_as_it_was(trained, monkeypatch) -> None:
    """register reopens the run to log the model into it; a log that fails (here: the
    artifact store's disk full, planted) used to leave the run FAILED, and a FAILED run
    is never registered. Its status and end time are put back; it registers after."""
    uri, run_id = trained
    before = MlflowClient(uri).get_run(run_id).info

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as broken:
        broken.setattr(mlflow.pytorch, "log_model", disk_full)
        with pytest.raises(OSError, match="No space left"):
            register(run_id, "disk-full")
    after = MlflowClient(uri).get_run(run_id).info
    assert (after.status, after.end_time) == (before.status, before.end_time) == ("FINISHED", before.end_time)
    assert register(run_id, "after-a-failure").version == "1"


@pytest.mark.parametrize("name", ["venv.__main__", "json.tool", "this", "pip", "mlflow.cli"])
def test_an_installed_module_outside_the_project_is_not_imported(name, monkeypatch) -> None:
    """A record can name any importable module, and importing one runs its code
    (`venv.__main__` runs the venv CLI on the process's arguments; `this` prints):
    only the project's modules, raysweep's, and prefixes in RAYSWEEP_TRUSTED_TRAINERS."""
    monkeypatch.delenv("RAYSWEEP_TRUSTED_TRAINERS", raising=False)
    modules = set(sys.modules)
    with pytest.raises(UserInputError, match="not a module of the project under"):
        check_trainer_name("r", name)
    assert name not in set(sys.modules) - modules
    if "__main__" not in name:
        monkeypatch.setenv("RAYSWEEP_TRUSTED_TRAINERS", f"other, {name.split('.')[0]}")
        assert check_trainer_name("r", name) == name
