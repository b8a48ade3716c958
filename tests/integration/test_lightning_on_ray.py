"""Lightning trainers on the shared Ray cluster: same shards, MLflow layout, resume."""

from __future__ import annotations

import pytest

from raysweep.cli import main
from raysweep.testing.helpers import experiment_runs, metric_series

TOLERANCE = 1e-5  # see tests/unit/test_lightning.py


def test_two_worker_lightning_matches_plain_and_resumes(ray_cluster, mlflow_uri, digits_spec):
    common = ["--set", "scaling.num_workers=2", "--set", "params.hidden=32", "--set", "scheduler.grace_period=1"]
    plain = digits_spec("digits_mlp.yaml")
    light = digits_spec("digits_mlp.yaml", trainer="trainers.digits_mlp_lightning")
    assert main(["train", str(plain), "--name", "plain", *common, "--set", "scheduler.max_epochs=2"]) == 0
    assert main(["train", str(light), "--name", "light", *common, "--set", "scheduler.max_epochs=1"]) == 0
    assert main(["train", str(light), "--name", "light", *common, "--set", "scheduler.max_epochs=2"]) == 0

    runs = experiment_runs(mlflow_uri, "digits-mlp")
    by_name = {r.info.run_name: r.info.run_id for r in runs}
    assert set(by_name) == {"plain", "light"} and len(runs) == 2, "resume must not open a second run"
    assert all(r.info.status == "FINISHED" for r in runs)
    plain_loss = metric_series(mlflow_uri, by_name["plain"], "train_loss")
    light_loss = metric_series(mlflow_uri, by_name["light"], "train_loss")
    assert [s for s, _ in light_loss] == [0, 1], "each epoch logged once across the resume"
    assert light_loss[0][1] == pytest.approx(plain_loss[0][1], rel=TOLERANCE)
    assert light_loss[1][1] < light_loss[0][1], "loss did not fall"
    light_val = metric_series(mlflow_uri, by_name["light"], "val_loss")
    plain_val = metric_series(mlflow_uri, by_name["plain"], "val_loss")
    assert light_val[0][1] == pytest.approx(plain_val[0][1], rel=TOLERANCE)


def test_lightning_sweep_has_the_plain_mlflow_layout(ray_cluster, mlflow_uri, digits_spec):
    spec = digits_spec("digits_cnn.yaml", budget={"num_trials": 3},
                       scaling={"num_workers": 1},
                       scheduler={"type": "asha", "metric": "val_loss", "mode": "min",
                                  "max_epochs": 2, "grace_period": 1})
    assert main(["tune", str(spec), "--set", "params.channels=8"]) == 0
    runs = experiment_runs(mlflow_uri, "digits-cnn")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 4
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        assert {"train_loss", "val_loss", "val_accuracy", "startup_s"} <= set(child.data.metrics)
