"""What the benchmark entries share: the context every entry gets (`Bench`, made in
the entry's process by `make_bench`), the digits sets, sweeps through raysweep, the
data writers and stream-loader settings of the data entries, scratch folders."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.core import Stage, stage
from raysweep.data.arrays import ArraySet
from raysweep.data.columns import Layout
from raysweep.data.examples import write_digits_parquet

PARAMS = {"batch_size": 64, "hidden": 512, "num_layers": 2, "lr": 0.01, "optimizer": "adam"}
EPOCHS = 3  # the first epoch is warm-up; steady state is the median of the rest



@dataclass
class Bench:
    """What every entry gets: the command line, a scratch folder, the digits sets; and
    `stage`, to say where the entry is (a timed-out or failed entry is reported with it)."""

    args: argparse.Namespace
    tmp: Path
    train: ArraySet
    validation: ArraySet

    def stage(self, name: str) -> Stage:
        """The running entry is in stage `name` from here on (`bench.stage("x")`), or for a
        block (`with bench.stage("x"):`): benchmarks.core.stage."""
        return stage(name)

    def ray(self) -> None:
        """Start the local Ray cluster the Ray entries share (once; no-op after)."""
        import ray

        from raysweep.cluster.connect import connect
        from raysweep.config.profile import ClusterProfile

        if ray.is_initialized():
            return
        os.environ.setdefault("RAYSWEEP_BASE_DIR", str(self.tmp))
        with self.stage("start the Ray cluster"):
            connect(ClusterProfile(name="bench", num_cpus=2))

    def after_failure(self) -> None:
        """After an entry failed or timed out, before the processes it started are killed
        (run_entry's on_failure): shut the Ray cluster down if one is up, so that the
        entry's actors, workers and placement groups (and a stuck Train or Tune run)
        go with it; the next Ray entry starts a new one."""
        if "ray" not in sys.modules:
            return
        import ray

        from raysweep.cluster.connect import disconnect

        if ray.is_initialized():
            disconnect()


def load_digits_sets(root: Path) -> tuple[ArraySet, ArraySet]:
    write_digits_parquet(root)
    features = [f"px_{i}" for i in range(64)]
    layout = Layout.scalars(features, "label", "int64")
    sets = []
    for split in ("train", "validation"):
        sets.append(ArraySet.from_parquet([str(root / split / "part-0.parquet")], layout))
    return sets[0], sets[1]


# ---------------------------------------------------------------- shared helpers


def write_sets(root: Path, train: ArraySet, validation: ArraySet, tile: int = 1) -> Path:
    """The digits sets (the training set repeated `tile` times) as Parquet under root."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, data, times in (("train", train, tile), ("validation", validation, 1)):
        features, labels = np.tile(data.features, (times, 1)), np.tile(data.labels, times)
        columns = {f"px_{i}": features[:, i] for i in range(features.shape[1])}
        (root / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({**columns, "label": labels}), root / split / "part-0.parquet")
    return root


def digits_spec(root: Path, storage: Path, searched: tuple[str, ...] | None = None, **values: Any) -> Any:
    """search_spaces/digits_mlp.yaml on the data under root, with `values` set (and
    only the `searched` params searched, when given)."""
    from raysweep.config.load import load_spec

    overrides = [f"data.train={root}/train", f"data.validation={root}/validation", f"storage_path={storage}"]
    overrides += [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in values.items()]
    spec = load_spec("search_spaces/digits_mlp.yaml", overrides)
    if searched is not None:
        spec = spec.model_copy(update={"space": {k: v for k, v in spec.space.items() if k in searched}})
    return spec


_SWEEP_IDS: set[str] = set()


def sweep(spec: Any, store: Any = None) -> Any:
    """One raysweep sweep through `raysweep.run.tune` on the connected cluster,
    written to `store` (default: nowhere); its SweepResult."""
    from raysweep.run import tune
    from raysweep.testing.stores import NullStore

    result = tune(spec, echo=False, report=False, store=store or NullStore())
    if result.sweep_id in _SWEEP_IDS:
        raise RuntimeError(f"raysweep.run.tune gave two sweeps the same id {result.sweep_id!r}: their trials "
                           f"share {result.sweep_dir} (and one MLflow parent run); this run's figures are void")
    _SWEEP_IDS.add(result.sweep_id)
    # (a sweep that spent its budget.total_epochs stops the trial still running: killed, not failed)
    stopped = (result.stopped_by or "").startswith("budget.total_epochs")
    failed = [t for t in result.state.trials.values()
              if not t.state.ended_well and not (stopped and t.state.word == "killed")]
    if failed:
        raise RuntimeError(f"sweep {result.sweep_id}: {len(failed)} trial(s) did not end well, e.g. "
                           f"{failed[0].trial_id}: {failed[0].state.word} {failed[0].error}")
    return result


def trials_in_order(result: Any) -> list[Any]:
    """The sweep's TrialRecords by start time."""
    return sorted(result.state.trials.values(), key=lambda t: t.started)


def training_seconds(trial: Any) -> float:
    """A trial's own training time: its first step to its last report (both in the worker)."""
    return trial.last_report_unix - trial.first_step_unix


def write_ingest_data(root: Path, target_bytes: float, files: int = 8) -> tuple[list[str], int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows_per_file = int(target_bytes / files / (64 * 4 + 8)) + 1
    rng = np.random.default_rng(0)
    paths = []
    for i in range(files):
        features = rng.random((rows_per_file, 64), dtype=np.float32)
        columns = {f"px_{j}": features[:, j] for j in range(64)}
        columns["label"] = rng.integers(0, 10, rows_per_file)
        path = root / f"part-{i}.parquet"
        pq.write_table(pa.table(columns), path, row_group_size=65536, compression="none", use_dictionary=False)
        paths.append(str(path))
    return paths, rows_per_file * files



MEMORY_CAP = 512 * 2**20
# Sizes per run: --quick shrinks the data for a smoke run (targets on a quick run still
# decide, except stream_memory's: its data is then smaller than 4x the cap).
STREAM_SIZES = {"full": {"stream_gb": 1.1, "s3_gb": 0.25, "ranks_gb": 0.5,
                         "memory_gb": 4 * MEMORY_CAP * 1.03 / 1e9,  # decoded, just over 4x the cap
                         "fingerprint_files": 1000},
                "quick": {"stream_gb": 0.1, "s3_gb": 0.04, "ranks_gb": 0.1, "memory_gb": 0.25,
                          "fingerprint_files": 1000}}
STREAM_WINDOW, STREAM_BATCH, STREAM_THREADS = 16384, 4096, 2
STREAM_LOADER = "raysweep stream loader"
STREAM_PYARROW = "pyarrow dataset.to_batches + to_matrix"
ROW_BYTES = 64 * 4 + 8


def stream_size(bench: Bench, key: str) -> Any:
    return STREAM_SIZES["quick" if bench.args.quick else "full"][key]


def write_stream_data(root: Path, gigabytes: float) -> tuple[list[str], int]:
    """root/train: `gigabytes` decoded (64 float32 + int64 label, 8 files, row groups of
    65536 rows, the ingest entry's writer); root/validation: one small file."""
    (root / "train").mkdir(parents=True)
    (root / "validation").mkdir()
    write_ingest_data(root / "validation", 1e6, files=1)
    return write_ingest_data(root / "train", gigabytes * 1e9)


def resolved(root: str) -> Any:
    """resolve_data on root/train and root/validation (a local path or an s3:// URI)."""
    from raysweep.config.spec import DataSpec
    from raysweep.data.files import resolve_data

    spec = DataSpec(train=f"{root}/train", validation=f"{root}/validation", features=["px_*"], label="label")
    return resolve_data(spec, "bench")


def stream_split(data: Any, window: int = STREAM_WINDOW, prefetch: int = 2, threads: int = STREAM_THREADS) -> Any:
    from raysweep.data.loader import stream_sources
    from raysweep.data.shards import StreamSettings
    from raysweep.data.stream import StreamSplit

    return StreamSplit(stream_sources(data)[0], StreamSettings(window, prefetch, threads))



def child_job(data: Any, rank: int, world_size: int, settings: dict[str, int], **extra: Any) -> dict[str, Any]:
    from benchmarks.data_support import source_job
    from raysweep.data.loader import stream_sources

    return {"source": source_job(stream_sources(data)[0]), "rank": rank, "world_size": world_size,
            "batch_size": STREAM_BATCH, "settings": settings, **extra}



SCRATCH: list[Path] = []


def scratch_dir(prefix: str) -> str:
    """A temporary folder removed when the script exits (data sets here reach 2 GB)."""
    path = tempfile.mkdtemp(prefix=prefix)
    SCRATCH.append(Path(path))
    return path


@atexit.register
def _remove_scratch() -> None:
    for path in SCRATCH:
        shutil.rmtree(path, ignore_errors=True)


def make_bench(args: argparse.Namespace) -> Bench:
    """The context of one entry's process (benchmarks.core.Child.context): the run's
    arguments, a scratch folder and the digits sets."""
    tmp = Path(scratch_dir(prefix="bench-"))
    train, validation = load_digits_sets(tmp)
    return Bench(args, tmp, train, validation)
