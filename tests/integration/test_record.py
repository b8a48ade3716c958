"""The run record, `raysweep reproduce`, determinism, on the shared Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from raysweep.cli import main
from raysweep.testing.helpers import experiment_runs, metric_series
from raysweep.testing.probe import probe_spec, write_probe_data

VERSION_KEYS = {"python", "ray", "torch", "pytorch-lightning", "lightning", "optuna", "mlflow", "pyarrow"}


@pytest.fixture
def own_data_spec(tmp_path: Path):
    """A probe spec on a private copy of the data (these tests change a file)."""
    root = tmp_path / "data"
    write_probe_data(root)
    raw = probe_spec(root, tmp_path / "results", tmp_path / "probe")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, root


def _runs(uri: str) -> list:
    """The probe experiment's runs, oldest first."""
    return experiment_runs(uri, order_by=["attributes.start_time ASC"])


def test_train_record_and_reproduce_same_metrics(ray_cluster, mlflow_uri, own_data_spec, tmp_path, capsys):
    """A 2-worker, 3-epoch training run: its two ranks' shards, its record, `reproduce`
    of it (same metrics per epoch), and `reproduce` refused once a data file changed."""
    spec, root = own_data_spec
    workers = 2
    # (the deterministic-kernels flag must not break a run; on CPU it changes nothing)
    overrides = ["--set", f"scaling.num_workers={workers}", "--set", "params.lr=0.2", "--set", "deterministic=true",
                 "--set", "scheduler.max_epochs=3"]
    assert main(["train", str(spec), *overrides]) == 0
    (run,) = _runs(mlflow_uri)

    # Each epoch the two ranks see disjoint shards that cover the train set, validation
    # exactly once, a new order each epoch; the loss falls.
    probe = tmp_path / "probe"
    for epoch in range(3):
        ranks = [np.load(probe / f"train-rank{r}-epoch{epoch}.npy") for r in range(2)]
        assert not set(ranks[0]) & set(ranks[1]), "shards overlap"
        assert sorted(np.concatenate(ranks).tolist()) == list(range(203)), "shards miss rows"
        val = np.concatenate([np.load(probe / f"val-rank{r}-epoch{epoch}.npy") for r in range(2)])
        assert sorted(val.tolist()) == list(range(203, 264)), "validation not exactly once"
    first = [np.load(probe / f"train-rank0-epoch{e}.npy") for e in range(2)]
    assert not np.array_equal(first[0], first[1]), "no per-epoch shuffle"
    client = MlflowClient(mlflow_uri)
    losses = metric_series(client, run.info.run_id, "train_loss")
    assert [s for s, _ in losses] == [0, 1, 2] and losses[-1][1] < losses[0][1], "loss did not fall"
    (tmp_path / "dl").mkdir()
    record = json.loads(Path(client.download_artifacts(run.info.run_id, "record.json", str(tmp_path / "dl")))
                        .read_text())
    assert record["spec"]["params"]["lr"] == 0.2, "the record holds the spec after --set"
    assert record["overrides"] == overrides[1::2]
    assert VERSION_KEYS <= set(record["versions"])
    assert record["git"]["commit"] and isinstance(record["git"]["dirty"], bool)
    assert record["cluster"]["resources"]["total"]["CPU"] == 2
    assert record["cluster"]["scaling"]["num_workers"] == workers
    assert record["seeds"] == {"seed": 0, "sampler_seed": 0}
    files = record["data"]["files"]["train"]
    assert record["data"]["mode"] == "footer", "footer fingerprints by default (no full read)"
    assert len(files) == 2 and {"path", "size", "rows", "mtime", "footer_sha256"} <= set(files[0])
    assert sum(f["rows"] for f in files) == 203 and record["data"]["schema_sha256"]
    tags = run.data.tags
    assert tags["raysweep.git.commit"] == record["git"]["commit"]
    assert tags["raysweep.data.sha256"] == record["data"]["sha256"]
    assert tags["raysweep.version.torch"] == record["versions"]["torch"]
    beside = tmp_path / "results" / "probe" / "probe-train" / "record.json"
    assert json.loads(beside.read_text())["data"] == record["data"], "record next to the checkpoints"
    if record["git"]["dirty"]:
        assert "git.diff" in [a.path for a in client.list_artifacts(run.info.run_id)]

    capsys.readouterr()
    assert main(["reproduce", run.info.run_id]) == 0
    out = capsys.readouterr().out
    assert "MATCH" in out and "DIFFERENT" not in out
    first, again = _runs(mlflow_uri)
    for metric in ("train_loss", "val_loss"):
        old = metric_series(client, first.info.run_id, metric)
        new = metric_series(client, again.info.run_id, metric)
        assert old == new and len(old) == 3, f"{metric}: same seed, same per-epoch values"

    # A changed data file: refused, naming it; nothing new in MLflow.
    part = root / "train" / "part-0.parquet"
    table = pq.read_table(part)
    x0 = table.column("x0").to_numpy().copy()
    x0[0] += 1.0
    pq.write_table(table.set_column(1, "x0", [np.asarray(x0)]), part)
    assert main(["reproduce", run.info.run_id]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(part) in err and "changed (" in err and "--force" in err
    assert len(_runs(mlflow_uri)) == 2
