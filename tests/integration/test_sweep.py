"""`raysweep tune` on the shared Ray cluster: MLflow layout and the Optuna study."""

from __future__ import annotations

from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from raysweep.cli import main
from raysweep.sweep import load_study


def test_sweep_leaves_parent_children_and_study(ray_cluster, mlflow_uri, write_spec, tmp_path, capsys):
    space = {
        "lr": {"type": "float", "low": 0.01, "high": 0.5, "log": True},
        "nan_epoch": {"type": "categorical", "choices": [-1, 0]},
    }
    scheduler = {"type": "asha", "metric": "val_loss", "mode": "min", "max_epochs": 3, "grace_period": 1}
    spec = write_spec(space=space, scheduler=scheduler, budget={"num_trials": 4},
                      sampler={"type": "tpe", "seed": 3, "n_startup_trials": 2})
    assert main(["tune", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "best trial" in out and "MLflow:" in out

    client = MlflowClient(mlflow_uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "probe"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 4 and len(runs) == 5
    assert all(r.info.status != "RUNNING" for r in runs)
    assert parents[0].info.status == "FINISHED"
    assert "raysweep.best_trial_id" in parents[0].data.tags

    by_nan = {True: [], False: []}
    for child in children:
        by_nan[child.data.params["nan_epoch"] == "0"].append(child)
    assert by_nan[True] and by_nan[False], "seed 3 should sample both nan_epoch values"
    assert all(c.info.status == "FAILED" for c in by_nan[True])
    assert all(c.info.status == "FINISHED" for c in by_nan[False])
    assert all("non-finite" in c.data.tags["raysweep.error"] for c in by_nan[True])
    for child in by_nan[False]:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == list(range(len(steps))) and steps

    (sweep_dir,) = [p for p in (tmp_path / "results" / "probe").iterdir() if p.is_dir()]
    study = load_study(str(sweep_dir), "probe")
    states = [t.state for t in study.trials]
    assert len(states) == 4
    assert states.count(optuna.trial.TrialState.FAIL) == len(by_nan[True])
    assert Path(sweep_dir, "optuna.journal").stat().st_size > 0
