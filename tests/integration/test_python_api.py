"""The Python API the CLI is a shell over: raysweep.check, raysweep.train, raysweep.tune."""

from __future__ import annotations

import pytest

import raysweep
from raysweep.tracking.trials import TrialState


def test_check_train_and_tune_from_python(ray_cluster, mlflow_uri, write_spec):
    spec = write_spec()
    checked = raysweep.check(spec, ["budget.num_trials=3"], will_connect=False)
    assert checked.spec.budget.num_trials == 3 and checked.data.num_train_rows == 203

    run = raysweep.train(spec, ["scheduler.max_epochs=1"], name="api")
    assert run.run_name == "api" and run.checkpoint and run.metrics["epoch"] == 0
    assert 0 < run.metrics["val_loss"] < 10

    sweep = raysweep.tune(spec, ["budget.num_trials=2"], report=False, echo=False)
    assert sweep.ok and len(sweep.state.trials) == 2
    assert all(t.state is TrialState.FINISHED and len(t.history) == 2 for t in sweep.state.trials.values())
    best = sweep.best_trial
    assert best is not None and best.best("val_loss", "min")["val_loss"] == min(
        t.best("val_loss", "min")["val_loss"] for t in sweep.state.trials.values())


def test_bad_input_raises_before_anything_starts(monkeypatch, write_spec, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(raysweep.UserInputError, match="budget.num_trials"):
        raysweep.tune(write_spec(), ["budget.num_trials=0"])
    assert not (tmp_path / "mlflow.db").exists()
