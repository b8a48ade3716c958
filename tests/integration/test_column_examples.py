"""The three column-shape examples as sweeps on the shared Ray cluster: one-worker
trials (memory loader) and two-worker Train worker groups (stream loader); the best
model of each one-worker sweep registered and loaded back; a PNG run reproduced.

- digits_tensor_cnn: a uint8 [8, 8] tensor column, tabular shorthand, LightningModule;
- digits_png: PNG bytes decoded (and shifted) by the trainer's transform, named batches;
- char_lm: variable-length token lists, padded per batch, no label, next-token loss.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow.pytorch
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from raysweep.cli import main
from raysweep.data.examples import EXAMPLES
from raysweep.registry import build_from_checkpoint, example_batch
from raysweep.testing.helpers import experiment_runs
from raysweep.tracking.lookup import load_recorded

REPO = Path(__file__).resolve().parents[2]
# (spec, the data folder, metric -> what a trained model must reach in 2 epochs)
CASES = {
    "digits_tensor_cnn": ("digits_tensor", lambda m: m["val_accuracy"] > 0.3),  # chance: 0.1
    "digits_png": ("digits_png", lambda m: m["val_accuracy"] > 0.3),
    "char_lm": ("text", lambda m: m["val_loss"] < 0.8 * math.log(257)),  # uniform over 257 tokens
}


@pytest.fixture(scope="module")
def example_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("examples")
    for name in {folder for folder, _ in CASES.values()}:
        EXAMPLES[name](root / name)
    return root


def example_spec(name: str, data: Path, tmp_path: Path, **overrides) -> Path:
    raw = yaml.safe_load((REPO / "search_spaces" / f"{name}.yaml").read_text())
    folder = CASES[name][0] if name in CASES else "text"
    raw["data"].update(train=str(data / folder / "train"), validation=str(data / folder / "validation"))
    raw["storage_path"] = str(tmp_path / "results")
    raw["scheduler"].update(max_epochs=2, grace_period=1)
    for key, value in overrides.items():
        section, field = key.split(".")
        raw[section][field] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("workers", [1, 2])
def test_example_sweeps_train_on_every_column_shape(ray_cluster, mlflow_uri, example_data, tmp_path, capsys,
                                                   name, workers):
    # Two workers: one trial (one wave of 2 CPUs), streamed; one worker: two trials, in memory.
    loader, trials = ("stream", 1) if workers == 2 else ("memory", 2)
    spec = example_spec(name, example_data, tmp_path, **{"budget.num_trials": trials,
                                                          "scaling.num_workers": workers, "data.loader": loader})
    args = ["tune", str(spec)] + (["--register"] if workers == 1 else [])
    assert main(args) == 0
    assert f"data: {loader} loader" in capsys.readouterr().out

    runs = experiment_runs(mlflow_uri, experiment=yaml.safe_load(spec.read_text())["name"])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(children) == trials and all(r.info.status == "FINISHED" for r in children)
    client = MlflowClient(mlflow_uri)
    best = client.get_run(parent.data.tags["raysweep.best_run_id"])
    learned = CASES[name][1]
    assert learned(best.data.metrics), best.data.metrics
    assert parent.data.tags["raysweep.data.loader"] == loader

    (tmp_path / "dl").mkdir()
    record = json.loads(Path(client.download_artifacts(parent.info.run_id, "record.json", str(tmp_path / "dl")))
                        .read_text())
    layout_columns = {"digits_tensor_cnn": ["image", "label"], "digits_png": ["png", "label"], "char_lm": ["tokens"]}
    assert record["data"]["columns"] == layout_columns[name]
    if workers == 2:
        return
    # The registered model takes what the trainer's model took (the named batch's tensors
    # after the transform, or the uint8 image tensor) and predicts as the checkpoint does.
    loaded = mlflow.pytorch.load_model(f"models:/{record['spec']['name']}/1")
    recorded = load_recorded(best.info.run_id)  # the trial's params, as the registry rebuilt it
    original = build_from_checkpoint(record["spec"]["trainer"], recorded.params, best.data.tags["raysweep.checkpoint"])
    example = example_batch(record)
    with torch.no_grad():
        if isinstance(example, dict):
            assert torch.allclose(loaded(*example.values()), original(example), atol=1e-5)
        else:
            assert example.dtype == torch.uint8 and tuple(example.shape[1:]) == (8, 8)
            assert torch.allclose(loaded(example), original(example), atol=1e-5)


def test_the_gpt_example_trains_sharded_and_registers_a_full_model(ray_cluster, mlflow_uri, example_data, tmp_path):
    """search_spaces/char_gpt.yaml as written (2 workers, FSDP, 2 micro-batches per
    step, bf16-mixed), one trial: its checkpoints are sharded (a digest file per rank),
    it learns, reports its throughput, and `--register` consolidates the shards into a
    model that predicts as one rebuilt from the checkpoint."""
    spec = example_spec("char_gpt", example_data, tmp_path, **{"budget.num_trials": 1})
    assert main(["tune", str(spec), "--register"]) == 0
    runs = experiment_runs(mlflow_uri, experiment="char-gpt")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    best = MlflowClient(mlflow_uri).get_run(parent.data.tags["raysweep.best_run_id"])
    checkpoint = Path(best.data.tags["raysweep.checkpoint"])
    assert {"shards-0.sha256", "shards-1.sha256"} <= {p.name for p in checkpoint.iterdir()}
    metrics = best.data.metrics
    assert metrics["val_loss"] < 0.8 * math.log(257), metrics
    assert metrics["tokens_per_s"] > 0 and metrics["model_tflops"] > 0 and "mfu" not in metrics  # (no peak on CPU)
    loaded = mlflow.pytorch.load_model("models:/char-gpt/1")
    recorded = load_recorded(best.info.run_id)
    original = build_from_checkpoint("trainers.char_gpt", recorded.params, str(checkpoint))
    example = example_batch(json.loads(Path(MlflowClient(mlflow_uri).download_artifacts(
        parent.info.run_id, "record.json", str(tmp_path))).read_text()))  # (padded to max_length, as exported)
    with torch.no_grad():
        assert torch.allclose(loaded(*example.values()), original(example), atol=1e-4)


def _rewrite(path: Path, change, row_group_size: int = 128) -> None:  # noqa: ANN001
    import pyarrow.parquet as pq

    pq.write_table(change(pq.read_table(path)), path, row_group_size=row_group_size)


def _one_trial_error(mlflow_uri: str, experiment: str) -> str:
    runs = experiment_runs(mlflow_uri, experiment=experiment)
    (child,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert child.info.status == "FAILED"
    return child.data.tags["raysweep.error"]


def test_a_null_token_row_only_the_data_shows(ray_cluster, mlflow_uri, tmp_path, capsys):
    """Nulls in a list column are not in the footer (its statistics count empty rows
    too): the memory loader's driver read refuses them (exit 2, nothing recorded); the
    stream loader's trial fails with one line naming the file, row group and column."""
    import pyarrow as pa

    data = tmp_path / "data"
    EXAMPLES["text"](data / "text")
    train = data / "text" / "train" / "part-0.parquet"

    def null_row(table: pa.Table) -> pa.Table:
        rows = table.column("tokens").to_pylist()
        rows[300] = None
        return table.set_column(0, "tokens", pa.array(rows, pa.list_(pa.int32())))

    _rewrite(train, null_row)
    spec = example_spec("char_lm", data, tmp_path, **{"budget.num_trials": 1, "data.loader": "memory"})
    assert main(["check", str(spec)]) == 0, "the first rows and the footers are clean"
    capsys.readouterr()
    assert main(["tune", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{train}: column 'tokens'" in err and "1 null row(s)" in err
    assert not Path(mlflow_uri.removeprefix("sqlite:///")).exists() or not [
        e for e in MlflowClient(mlflow_uri).search_experiments() if e.name == "char-lm"], "nothing recorded"

    spec = example_spec("char_lm", data, tmp_path, **{"budget.num_trials": 1, "data.loader": "stream"})
    main(["tune", str(spec)])
    error = _one_trial_error(mlflow_uri, "char-lm")
    assert "\n" not in error and "ColumnDataError" in error
    assert f"{train}: row group 2: column 'tokens'" in error, error


def test_a_transform_failing_on_a_later_batch_fails_the_trial_naming_it(ray_cluster, mlflow_uri, tmp_path):
    """Corrupt PNG bytes deep in the data: check passes (it decodes the first rows);
    the trial fails with one line naming the transform, the batch and the cause."""
    import pyarrow as pa

    data = tmp_path / "data"
    EXAMPLES["digits_png"](data / "digits_png")

    def corrupt(table: pa.Table) -> pa.Table:
        rows = table.column("png").to_pylist()
        rows[700] = b"not a png"
        return table.set_column(0, "png", pa.array(rows, pa.binary()))

    _rewrite(data / "digits_png" / "train" / "part-0.parquet", corrupt)
    spec = example_spec("digits_png", data, tmp_path, **{"budget.num_trials": 1})
    assert main(["check", str(spec)]) == 0
    main(["tune", str(spec)])
    error = _one_trial_error(mlflow_uri, "digits-png")
    assert "\n" not in error
    assert "TransformError: trainers.digits_png.transform failed on epoch 0 batch " in error, error
    assert "(rank 0): UnidentifiedImageError: cannot identify image file" in error, error


def test_an_augmented_png_run_reproduces_its_metrics(ray_cluster, mlflow_uri, example_data, tmp_path, capsys):
    """The transform's random shifts come from (seed, epoch, step, rank): a reproduced
    run has the same per-epoch losses."""
    spec = example_spec("digits_png", example_data, tmp_path)
    assert main(["train", str(spec)]) == 0
    (run,) = experiment_runs(mlflow_uri, experiment="digits-png")
    capsys.readouterr()
    assert main(["reproduce", run.info.run_id]) == 0
    assert "MATCH" in capsys.readouterr().out
    client = MlflowClient(mlflow_uri)
    first, again = experiment_runs(mlflow_uri, experiment="digits-png")
    for metric in ("train_loss", "val_loss"):
        series = [[m.value for m in client.get_metric_history(r.info.run_id, metric)] for r in (first, again)]
        assert series[0] == series[1] and len(series[0]) == 2, metric
