"""failure.on_nan on the shared Ray cluster: `stop` ends a sweep's trials as early stops
(pruned in the study, the reason on their runs and in the console), and `skip_batch`
keeps a two-rank Train run going when one rank's loss diverges (the ranks agree at every
step, so none waits in a collective the other skipped)."""

from __future__ import annotations

import optuna

from raysweep.cli import main
from raysweep.testing.helpers import experiment_runs, metric_series, only_run, probe_params
from raysweep.tracking import tags as tag
from raysweep.tracking.study import load_study

STOP_REASON = "non-finite loss at epoch 1, batch 2 (rank 0; failure.on_nan: stop)"


def test_stop_ends_each_trial_as_an_early_stop_with_its_reason(ray_cluster, mlflow_uri, write_spec, tmp_path,
                                                               capsys):
    spec = write_spec(failure={"on_nan": "stop"}, scheduler={"type": "fifo", "metric": "val_loss", "mode": "min",
                                                             "max_epochs": 3},
                      params=probe_params(tmp_path, nan_loss_epoch=1, nan_loss_step=2))
    assert main(["tune", str(spec)]) == 0
    out = capsys.readouterr().out
    children = [r for r in experiment_runs(mlflow_uri) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for child in children:
        trial_id = child.data.tags[tag.TRIAL_ID]
        assert child.info.status == "FINISHED" and child.data.tags[tag.STATE] == "STOPPED_EARLY"
        assert child.data.tags[tag.STOP_REASON] == STOP_REASON
        assert [s for s, _ in metric_series(mlflow_uri, child.info.run_id, "val_loss")] == [0]
        assert f"[{trial_id}] stops early: {STOP_REASON}" in out.splitlines()
        assert f"[{trial_id}] stopped early after 1 epoch(s)" in out.splitlines()
    (sweep_dir,) = [p for p in (tmp_path / "results" / "probe").iterdir() if p.is_dir()]
    study = load_study(str(sweep_dir), "probe")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in study.trials)


def test_skip_batch_drops_one_ranks_diverged_batch_and_the_run_goes_on(ray_cluster, mlflow_uri, write_spec,
                                                                        tmp_path):
    spec = write_spec(failure={"on_nan": "skip_batch"}, scaling={"num_workers": 2},
                      params=probe_params(tmp_path, nan_loss_epoch=0, nan_loss_step=3, fault_rank=1))
    assert main(["train", str(spec)]) == 0
    run = only_run(mlflow_uri)
    assert run.info.status == "FINISHED"
    assert metric_series(mlflow_uri, run.info.run_id, "skipped_batches") == [(0, 1.0), (1, 0.0)]
    assert all(v == v for _, v in metric_series(mlflow_uri, run.info.run_id, "val_loss"))  # (finite: no NaN update)
