"""`raysweep train` on the shared Ray cluster: resume by run name. (Two ranks' shards and
exact validation are checked on the run of tests/integration/test_record.py.)"""

from __future__ import annotations

from raysweep.cli import main
from raysweep.testing.helpers import metric_series, only_run


def _history(uri: str, metric: str) -> list[tuple[int, float]]:
    """The metric of the one (finished) MLflow run of the training run."""
    run = only_run(uri)
    assert run.info.status == "FINISHED"
    return metric_series(uri, run.info.run_id, metric)


def test_rerun_with_same_name_resumes_from_the_checkpoint(ray_cluster, mlflow_uri, write_spec, tmp_path):
    spec = write_spec()
    assert main(["train", str(spec), "--set", "scheduler.max_epochs=1"]) == 0
    probe = tmp_path / "probe"
    assert sorted(p.name for p in probe.glob("train-*")) == ["train-rank0-epoch0.npy"]
    for path in probe.iterdir():
        path.unlink()
    assert main(["train", str(spec), "--set", "scheduler.max_epochs=3"]) == 0
    assert sorted(p.name for p in probe.glob("train-*")) == [
        "train-rank0-epoch1.npy", "train-rank0-epoch2.npy"], "epoch 0 ran again"
    assert [s for s, _ in _history(mlflow_uri, "val_loss")] == [0, 1, 2]
    # What the workers used, per epoch, as MLflow system metrics.
    assert [s for s, v in _history(mlflow_uri, "system/peak_rss_mb") if v > 0] == [0, 1, 2]
