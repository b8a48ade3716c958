"""Data in a real S3 store (SeaweedFS on 127.0.0.1), read with the standard AWS
variables and nothing else: check, train on 1 and 2 workers and tune with the stream
loader; bad endpoints, buckets and credentials refused within seconds before
anything starts; an object deleted mid-run fails the run naming it, and the re-run
resumes from the latest checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from raysweep.cli import main
from raysweep.testing.evidence import run_figures
from raysweep.testing.helpers import free_port, only_run, probe_params, sweep_runs, wait_for_pid

REPO = Path(__file__).resolve().parents[2]
TRAIN_IDS = set(range(203))
S3_DATA = {"train": "s3://data/probe/train", "validation": "s3://data/probe/validation",
           "features": ["row_id", "x*"], "label": "label", "loader": "stream", "shuffle_window_rows": 16}


def test_check_reads_only_footers_from_the_bucket(s3_server, write_spec, capsys):
    spec = write_spec(data=S3_DATA)
    assert main(["check", str(spec)]) == 0
    assert "203 train rows in 2 file(s), 61 validation rows" in capsys.readouterr().out


@pytest.mark.parametrize("workers", [1, 2])
def test_train_streams_from_the_bucket(ray_cluster, mlflow_uri, write_spec, tmp_path, workers):
    spec = write_spec(data=S3_DATA, scaling={"num_workers": workers})
    assert main(["train", str(spec)]) == 0
    run = only_run(mlflow_uri)
    assert run.data.tags["raysweep.data.loader"] == "stream"
    for epoch in (0, 1):
        seen = np.concatenate([np.load(tmp_path / "probe" / f"train-rank{r}-epoch{epoch}.npy") for r in range(workers)])
        assert sorted(seen.tolist()) == sorted(TRAIN_IDS)
    record = (tmp_path / "results" / "probe" / "probe-train" / "record.json").read_text()
    assert "s3://data/probe/train/part-0.parquet" in record
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL"):
        assert os.environ[name] not in record, "credentials and endpoints never reach the record"


def test_tune_streams_from_the_bucket(ray_cluster, mlflow_uri, write_spec, capsys):
    spec = write_spec(data=S3_DATA)
    assert main(["tune", str(spec)]) == 0
    parents, children = sweep_runs(mlflow_uri)
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert parents[0].data.tags["raysweep.data.loader"] == "stream"


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "raysweep", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    return done, time.monotonic() - started


BAD = {
    "unreachable endpoint": ({"AWS_ENDPOINT_URL": "http://127.0.0.1:{port}"}, {}, "NETWORK_CONNECTION"),
    "missing bucket": ({}, {"train": "s3://nosuch/probe/train"}, "bucket s3://nosuch does not exist"),
    "missing prefix": ({}, {"train": "s3://data/nothing"}, "no Parquet files at 's3://data/nothing'"),
    "denied credentials": ({"AWS_SECRET_ACCESS_KEY": "wrong"}, {}, "ACCESS_DENIED"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_store_input_exits_2_within_15_s_before_anything_starts(s3_server, write_spec, tmp_path, case):
    env_change, data_change, expected = BAD[case]
    env = {**os.environ, **{k: v.format(port=free_port()) for k, v in env_change.items()},
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    spec = write_spec(data={**S3_DATA, **data_change})
    done, seconds = _cli(["train", str(spec)], env, tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "s3://" in lines[0], lines
    assert seconds < 15
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "results").exists(), "nothing started"


def test_an_object_deleted_mid_run_fails_naming_it_and_the_rerun_resumes(ray_cluster, s3_server, mlflow_uri,
                                                                         write_spec, tmp_path, capsys, fault_figures):
    # Row groups of 8 rows: more than the loader keeps decoded, so the rest of the
    # epoch must read from the store again.
    fs = s3_server.filesystem()
    for split in ("train", "validation"):
        for part in ("part-0.parquet", "part-1.parquet"):
            with fs.open_input_file(f"data/probe/{split}/{part}") as source:
                table = pq.read_table(source)
            with fs.open_output_stream(f"data/small-groups/{split}/{part}") as sink:
                pq.write_table(table, sink, row_group_size=8)
    data = {**S3_DATA, "train": "s3://data/small-groups/train", "validation": "s3://data/small-groups/validation",
            "prefetch_windows": 1, "read_threads": 1}
    spec = write_spec(data=data,
                      params=probe_params(tmp_path, pause_epoch=1, pause_step=1),
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 2})
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", main(["train", str(spec)])), daemon=True)
    thread.start()
    wait_for_pid(tmp_path / "probe" / "pause.pid")
    kept = {}
    for part in ("part-0.parquet", "part-1.parquet"):  # whichever the rest of the epoch reads
        with fs.open_input_file(f"data/small-groups/train/{part}") as handle:
            kept[part] = handle.read()
        fs.delete_file(f"data/small-groups/train/{part}")
    (tmp_path / "probe" / "go").touch()
    fault_figures(faults_injected=1)
    thread.join(timeout=300)
    assert result.get("code") == 1
    err = capsys.readouterr().err
    assert "s3://data/small-groups/train/part-" in err and "its checkpoints in" in err, err
    for part, content in kept.items():
        with fs.open_output_stream(f"data/small-groups/train/{part}") as handle:
            handle.write(content)
    epoch0 = (tmp_path / "probe" / "train-rank0-epoch0.npy").stat().st_mtime_ns
    code = main(["train", str(spec)])
    fault_figures(**run_figures(mlflow_uri, tmp_path / "results" / "probe" / "probe-train", probe=tmp_path / "probe",
                                epochs=(0, 1), expected=TRAIN_IDS))
    assert code == 0
    assert (tmp_path / "probe" / "train-rank0-epoch0.npy").stat().st_mtime_ns == epoch0, "resumed, not restarted"
    assert only_run(mlflow_uri).info.status == "FINISHED"
    fault_figures(faults_survived=1)
