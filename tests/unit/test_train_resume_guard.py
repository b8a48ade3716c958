"""`raysweep train` resumes a named run only with the spec and data it started with
(only scheduler.max_epochs may grow): anything else is refused before Ray starts,
naming the fields, unless --force. The earlier run is a real record in a real sqlite
MLflow store, as `train` leaves it."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import ray
import yaml

from raysweep.cli import main
from raysweep.errors import UserInputError
from raysweep.prepare import prepare
from raysweep.run import refuse_a_changed_spec
from raysweep.testing.probe import probe_spec, write_probe_data
from raysweep.tracking.record import RECORD_FILE, data_fingerprint
from raysweep.tracking.store import RunStore


@pytest.fixture
def started(tmp_path, monkeypatch):
    """A spec, its data, and an MLflow store holding the record of its run
    `probe-train` (what `raysweep train` writes before training)."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    write_probe_data(tmp_path / "data")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(probe_spec(tmp_path / "data", tmp_path / "results", tmp_path / "probe")))
    run = prepare(str(spec), [])
    store = RunStore(uri, run.spec.name)
    run_id = store.open("train/probe-train", "probe-train", params=run.spec.params)
    # The parts of build_record's record the guard reads (build_record also asks git,
    # a subprocess the unit tier does not start).
    record = {"kind": "train", "run_name": "probe-train", "spec": run.spec.model_dump(mode="json"),
              "data": data_fingerprint(run.data)}
    store.log_text(run_id, json.dumps(record), RECORD_FILE)
    return tmp_path, spec


def test_the_same_spec_or_more_epochs_resumes(started) -> None:
    _, spec = started
    refuse_a_changed_spec(prepare(str(spec), []), "probe-train")
    refuse_a_changed_spec(prepare(str(spec), ["scheduler.max_epochs=5"]), "probe-train")
    refuse_a_changed_spec(prepare(str(spec), ["params.lr=0.2"]), "another-name")  # (a new run)


@pytest.mark.parametrize(("overrides", "named"), [
    (["params.lr=0.2"], "params.lr"),
    (["scheduler.max_epochs=1"], "scheduler.max_epochs"),
    (["params.lr=0.2", "seed=3"], "params.lr, seed"),
    (["trainer=trainers.digits_mlp"], "trainer"),
])
def test_a_changed_spec_is_refused_naming_the_fields(started, overrides, named) -> None:
    _, spec = started
    with pytest.raises(UserInputError) as refused:
        refuse_a_changed_spec(prepare(str(spec), overrides), "probe-train")
    assert f"{named}: differ from what run 'probe-train' started with" in str(refused.value)


def test_changed_data_is_refused(started) -> None:
    root, spec = started
    part = root / "data" / "train" / "part-0.parquet"
    table = pq.read_table(part)
    pq.write_table(table.slice(0, table.num_rows - 1), part)
    with pytest.raises(UserInputError, match=r"data \(its files' fingerprint\): differ"):
        refuse_a_changed_spec(prepare(str(spec), []), "probe-train")


def test_the_cli_refuses_in_one_line_before_ray_unless_forced(started, capsys) -> None:
    _, spec = started
    assert main(["train", str(spec), "--set", "params.lr=0.2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"raysweep: error: {spec}: params.lr: differ"), err
    assert "--force" in err and not ray.is_initialized()
