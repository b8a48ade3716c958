"""`raysweep train` on the shared Ray cluster: sharding, exact validation, resume."""

from __future__ import annotations

import numpy as np

from raysweep.cli import main
from raysweep.testing.helpers import metric_series, only_run


def _history(uri: str, metric: str) -> list[tuple[int, float]]:
    """The metric of the one (finished) MLflow run of the training run."""
    run = only_run(uri)
    assert run.info.status == "FINISHED"
    return metric_series(uri, run.info.run_id, metric)


def test_two_workers_see_disjoint_shards_covering_the_train_set(ray_cluster, mlflow_uri, write_spec, tmp_path):
    spec = write_spec()
    code = main(["train", str(spec), "--set", "scaling.num_workers=2", "--set", "scheduler.max_epochs=3"])
    assert code == 0
    probe = tmp_path / "probe"
    for epoch in range(3):
        ranks = [np.load(probe / f"train-rank{r}-epoch{epoch}.npy") for r in range(2)]
        assert not set(ranks[0]) & set(ranks[1]), "shards overlap"
        assert sorted(np.concatenate(ranks).tolist()) == list(range(203)), "shards miss rows"
        val = np.concatenate([np.load(probe / f"val-rank{r}-epoch{epoch}.npy") for r in range(2)])
        assert sorted(val.tolist()) == list(range(203, 264)), "validation not exactly once"
    first = [np.load(probe / f"train-rank0-epoch{e}.npy") for e in range(2)]
    assert not np.array_equal(first[0], first[1]), "no per-epoch shuffle"
    losses = _history(mlflow_uri, "train_loss")
    assert [s for s, _ in losses] == [0, 1, 2]
    assert losses[-1][1] < losses[0][1], "loss did not fall"


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
