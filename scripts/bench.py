"""Benchmarks, each side by side with its baseline in one run, alternating A and B.

    .venv/bin/python scripts/bench.py [--repeats 2] [--only overhead,step,...] [--out bench.json]

Entries (medians over repeats; each names its baseline):
- overhead: trial start (Tune's on_trial_start on the driver) to the first training
  step, for one-worker and two-worker trials of raysweep sweeps, against Tune trials
  that call a bare Ray Train V2 TorchTrainer.fit() on the same trainer and data.
- step: steady-state time per training step of the raysweep plain trainer and of
  the Lightning path, against a hand-written PyTorch loop (same model, data, batch
  order, thread count; in-process, no Ray).
- dp: 2 workers through raysweep (Ray Train, DDP on gloo) against plain
  torch.distributed DDP on gloo in 2 spawned processes: set-up and steady state.
- ingest: rows/s and GB/s from >= 1 GB of generated Parquet to torch batches:
  raysweep's reader + shard iterator, against ParquetFile.iter_batches +
  torch.from_numpy, and against repeating one preallocated batch (upper bound).
- search: epochs consumed until a target validation loss, TPE + ASHA against
  random search without early stopping, same space and budget, several seeds.
- throughput: wall time of a sweep of trials of >= 10 s against the ideal (sum of
  the trials' own training time / concurrent trials).
- tracking: a trial's training time with raysweep's MLflow logging against the
  same trial with logging off.
Prints a Markdown table and writes JSON to --out (and the table to OUT.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raysweep.config.spec import LightningSpec
from raysweep.data.arrays import ArraySet
from raysweep.data.examples import write_digits_parquet
from raysweep.data.shards import train_batch_indices
from raysweep.execution.context import TrainContext
from raysweep.execution.lightning import find_module_factory, fit
from trainers import digits_mlp, digits_mlp_lightning

PARAMS = {"batch_size": 64, "hidden": 512, "num_layers": 2, "lr": 0.01, "optimizer": "adam"}
EPOCHS = 3  # the first epoch is warm-up; steady state is the median of the rest


def load_digits_sets(root: Path) -> tuple[ArraySet, ArraySet]:
    write_digits_parquet(root)
    features = [f"px_{i}" for i in range(64)]
    sets = []
    for split in ("train", "validation"):
        sets.append(ArraySet.from_parquet([str(root / split / "part-0.parquet")], features, "label"))
    return sets[0], sets[1]


def step_seconds(reports: list[dict[str, float]], rows: int, batches: int) -> float:
    """Median steady-state seconds per step from per-epoch samples_per_s."""
    per_epoch = [rows / r["samples_per_s"] / batches for r in reports[1:]]
    return statistics.median(per_epoch)


def hand_loop(train: ArraySet, params: dict[str, Any], seed: int = 0) -> tuple[list[dict], list[float]]:
    """The baseline: a plain PyTorch loop over the same batches, no context."""
    torch.manual_seed(seed)
    model = digits_mlp.build_model(params)
    optimizer = digits_mlp.build_optimizer(model, params)
    loss_fn = torch.nn.CrossEntropyLoss()
    reports, losses = [], []
    for epoch in range(EPOCHS):
        batches = train_batch_indices(len(train), 0, 1, params["batch_size"], seed, epoch)
        started, total = time.perf_counter(), 0.0
        for rows in batches:
            x, y = torch.from_numpy(train.features[rows]), torch.from_numpy(train.labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
        reports.append({"samples_per_s": len(train) / (time.perf_counter() - started)})
        losses.append(total / len(train))
    return reports, losses


def bench_step(train: ArraySet, validation: ArraySet, repeats: int) -> dict[str, Any]:
    batches = len(train_batch_indices(len(train), 0, 1, PARAMS["batch_size"], 0, 0))
    times: dict[str, list[float]] = {"hand-written loop": [], "raysweep plain": [], "raysweep lightning": []}
    losses: dict[str, list[float]] = {}
    for _ in range(repeats):
        reports, losses["hand-written loop"] = hand_loop(train, PARAMS)
        times["hand-written loop"].append(step_seconds(reports, len(train), batches))

        ctx, out = TrainContext.in_process(train, validation, PARAMS, num_epochs=EPOCHS)
        digits_mlp.train(ctx)
        times["raysweep plain"].append(step_seconds([m for m, _ in out], len(train), batches))
        losses["raysweep plain"] = [m["train_loss"] for m, _ in out]

        ctx, out = TrainContext.in_process(train, validation, PARAMS, num_epochs=EPOCHS)
        fit(ctx, find_module_factory(digits_mlp_lightning), LightningSpec())
        times["raysweep lightning"].append(step_seconds([m for m, _ in out], len(train), batches))
        losses["raysweep lightning"] = [m["train_loss"] for m, _ in out]
    base = statistics.median(times["hand-written loop"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append({"name": name, "ms_per_step": median * 1e3, "ratio": median / base,
                     "added_ms_per_step": (median - base) * 1e3,
                     "losses": [round(v, 6) for v in losses[name]]})
    plain_equal = np.allclose(losses["raysweep plain"], losses["hand-written loop"], atol=5e-6)
    return {"entry": "step", "baseline": "hand-written loop", "threads": torch.get_num_threads(),
            "model": "MLP 64-512-512-10, batch 64", "rows": rows,
            "plain_losses_equal_to_5_decimals": bool(plain_equal)}


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


class NullStore:
    """A RunStore that writes nothing (the tracking-off side, and sweeps whose MLflow
    runs are not what is measured)."""

    uri = "none"

    def open(self, *args: Any, **kwargs: Any) -> str:
        return "none"

    def log_params(self, *args: Any) -> None: ...
    def log_metrics(self, *args: Any, **kwargs: Any) -> None: ...
    def set_tags(self, *args: Any) -> None: ...
    def close(self, *args: Any) -> None: ...


class Recorder:
    """Keeps every result of a sweep in arrival order (SweepTracker mixin)."""

    def __init__(self, tracker: Any) -> None:
        self.results: list[tuple[str, dict[str, Any]]] = []
        original = tracker.on_trial_result

        def on_trial_result(iteration, trials, trial, result, **info):
            self.results.append((trial.trial_id, dict(result)))
            original(iteration, trials, trial, result, **info)

        tracker.on_trial_result = on_trial_result


def sweep(spec: Any, label: str, store: Any = None) -> tuple[Any, Recorder]:
    """Run one raysweep sweep on the connected cluster; returns (outcome, recorder)."""
    from raysweep.cluster.connect import cluster_capacity
    from raysweep.data.files import resolve_data
    from raysweep.execution.driver import TrainJob, storage_root
    from raysweep.execution.sweep import run_sweep
    from raysweep.tracking.callbacks import SweepTracker

    data = resolve_data(spec.data, "bench")
    job = TrainJob.from_spec(spec, data, storage_root(spec))
    store = store or NullStore()
    sweep_id = f"{label}-{time.time_ns()}"
    parent = store.open(f"sweep/{sweep_id}", sweep_id)
    tracker = SweepTracker(store, sweep_id, parent, spec.scheduler.metric, spec.scheduler.mode,
                           spec.scheduler.max_epochs, echo=False)
    recorder = Recorder(tracker)
    outcome = run_sweep(spec, job, sweep_id, tracker, *cluster_capacity())
    tracker.close_all("FINISHED")
    return outcome, recorder


def training_seconds(results: list[dict[str, Any]]) -> float:
    """A trial's own training time: its first step to its last report (both in the worker)."""
    first = min(r["first_step_unix"] for r in results if "first_step_unix" in r)
    return max(r["report_unix"] for r in results) - first


# ---------------------------------------------------------------- overhead


def bare_loop(config: dict[str, Any]) -> None:
    """Baseline worker: the same 1-epoch MLP step loop, straight on ray.train."""
    import ray
    import ray.train

    train, _ = ray.get(config["arrays"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(0)
    model = digits_mlp.build_model(PARAMS)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = digits_mlp.build_optimizer(model, PARAMS)
    first = None
    for rows in train_batch_indices(len(train), rank, world, PARAMS["batch_size"], 0, 0):
        x, y = torch.from_numpy(train.features[rows]), torch.from_numpy(train.labels[rows])
        first = first or time.time()  # as raysweep's context: when the first batch is ready
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    # Ray Train V2 keeps a result's metrics with its checkpoint: save the state as raysweep does.
    with tempfile.TemporaryDirectory() as tmp:
        if rank == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, f"{tmp}/state.pt")
        checkpoint = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
        ray.train.report({"first_step_unix": first, "epoch": 0}, checkpoint=checkpoint)


def bare_trial(config: dict[str, Any], *, arrays: Any, workers: int, storage: str) -> None:
    """Baseline trial: a Tune trial that calls a bare TorchTrainer.fit()."""
    from ray import tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    TorchTrainer(
        bare_loop, train_loop_config={"arrays": arrays}, scaling_config=ScalingConfig(num_workers=workers),
        run_config=RunConfig(name=tune.get_context().get_trial_id(), storage_path=storage,
                             callbacks=[TuneReportCallback()]),
    ).fit()


def bare_sweep(arrays: Any, workers: int, trials: int, storage: str) -> list[float]:
    """Start-up of each trial of a Tune run of bare TorchTrainer trials."""
    import functools

    from ray import tune

    from raysweep.execution.sweep import TRIAL_DRIVER_RESOURCES

    started: dict[str, float] = {}
    first: dict[str, float] = {}

    class Clock(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            started[trial.trial_id] = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            first.setdefault(trial.trial_id, result["first_step_unix"])

    driver = functools.partial(bare_trial, arrays=arrays, workers=workers, storage=storage)
    tune.Tuner(
        tune.with_resources(driver, TRIAL_DRIVER_RESOURCES),
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=1),
        run_config=tune.RunConfig(name=f"bare-{time.time_ns()}", storage_path=storage, callbacks=[Clock()],
                                  verbose=0),
    ).fit()
    return [first[t] - started[t] for t in started]


def bench_overhead(data_root: Path, repeats: int, trials: int = 2) -> dict[str, Any]:
    import ray

    from raysweep.data.arrays import load_arrays
    from raysweep.data.files import resolve_data

    storage = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    rows = []
    for workers in (1, 2):
        spec = digits_spec(data_root, storage, searched=("lr",), **{
            "scaling.num_workers": workers, "scheduler.type": "fifo", "scheduler.max_epochs": 1,
            "scheduler.grace_period": 1, "budget.num_trials": trials, "budget.max_concurrent_trials": 1,
            **{f"params.{k}": v for k, v in PARAMS.items()}})
        arrays = ray.put(load_arrays(resolve_data(spec.data, "bench")))
        samples: dict[str, list[float]] = {"bare TorchTrainer.fit": [], "raysweep": []}
        cold: list[float] = []
        for _ in range(repeats):
            samples["bare TorchTrainer.fit"] += bare_sweep(arrays, workers, trials, str(storage))
            outcome, _ = sweep(spec, f"overhead-{workers}")
            startups = [r.startup_s for r in sorted(outcome.tracker.trials.values(), key=lambda r: r.started)]
            samples["raysweep"] += startups
            cold.append(startups[0])
        base = statistics.median(samples["bare TorchTrainer.fit"])
        for name, values in samples.items():
            median = statistics.median(values)
            row = {"name": f"{name}, {workers} worker(s)", "startup_s": median, "ratio": median / base,
                   "samples": [round(v, 3) for v in values]}
            if name == "raysweep":
                row["first_trial_of_sweep_s"] = statistics.median(cold)
            rows.append(row)
    return {"entry": "overhead", "baseline": "Tune trial calling a bare TorchTrainer.fit()",
            "trials_per_sweep": trials, "rows": rows}


# ---------------------------------------------------------------- data-parallel


def _ddp_process(rank: int, world: int, port: int, path: str, epochs: int, launched: float, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # as a Ray Train worker with 1 CPU
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    data = np.load(path)
    features, labels = data["features"], data["labels"]
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(digits_mlp.build_model(PARAMS))
    optimizer = digits_mlp.build_optimizer(model, PARAMS)
    loss_fn = torch.nn.CrossEntropyLoss()
    first, epoch_s = None, []
    for epoch in range(epochs):
        started = time.perf_counter()
        for rows in train_batch_indices(len(labels), rank, world, PARAMS["batch_size"], 0, epoch):
            x, y = torch.from_numpy(features[rows]), torch.from_numpy(labels[rows])
            first = first or time.time()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        epoch_s.append(time.perf_counter() - started)
    if rank == 0:
        Path(out).write_text(json.dumps({"setup_s": first - launched, "epoch_s": epoch_s}))
    dist.destroy_process_group()


def plain_ddp(train: ArraySet, epochs: int, tmp: Path) -> dict[str, Any]:
    import socket

    import torch.multiprocessing as mp

    path, out = tmp / "ddp.npz", tmp / "ddp.json"
    np.savez(path, features=train.features, labels=train.labels)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launched = time.time()
    mp.spawn(_ddp_process, args=(2, port, str(path), epochs, launched, str(out)), nprocs=2)
    return json.loads(out.read_text())


def bench_dp(train: ArraySet, validation: ArraySet, repeats: int, tile: int = 8, epochs: int = 5) -> dict[str, Any]:
    from raysweep.data.arrays import load_arrays
    from raysweep.data.files import resolve_data
    from raysweep.execution.driver import TrainJob, build_trainer

    tmp = Path(tempfile.mkdtemp(prefix="bench-dp-"))
    root = write_sets(tmp / "data", train, validation, tile)
    spec = digits_spec(root, tmp / "results", **{"scaling.num_workers": 2, "scheduler.max_epochs": epochs,
                                                 "checkpoint.num_to_keep": epochs})
    data = resolve_data(spec.data, "bench")
    tiled, _ = load_arrays(data)
    job = TrainJob.from_spec(spec, data, str(tmp / "results"))
    batches = len(train_batch_indices(len(tiled), 0, 2, PARAMS["batch_size"], 0, 0))
    setup: dict[str, list[float]] = {"plain DDP (gloo)": [], "raysweep": []}
    step: dict[str, list[float]] = {"plain DDP (gloo)": [], "raysweep": []}
    for i in range(repeats):
        ddp = plain_ddp(tiled, epochs, tmp)
        setup["plain DDP (gloo)"].append(ddp["setup_s"])
        step["plain DDP (gloo)"].append(statistics.median(ddp["epoch_s"][1:]) / batches)
        started = time.time()
        result = build_trainer(job, {**spec.params, **PARAMS}, f"dp-{i}", callbacks=[]).fit()
        history = [m for m in result.metrics_dataframe.to_dict("records")]
        setup["raysweep"].append(result.metrics_dataframe["first_step_unix"].dropna().iloc[0] - started)
        step["raysweep"].append(statistics.median(
            len(tiled) / r["samples_per_s"] / batches for r in history[1:]))
    base = statistics.median(step["plain DDP (gloo)"])
    rows = [{"name": name, "setup_s": statistics.median(setup[name]), "ms_per_step": statistics.median(v) * 1e3,
             "step_ratio": statistics.median(v) / base} for name, v in step.items()]
    return {"entry": "dp", "baseline": "plain DDP (gloo)", "rows": rows, "rows_train": len(tiled),
            "steps_per_epoch_per_rank": batches, "model": "MLP 64-512-512-10, batch 64 per rank, 1 thread/worker"}


# ---------------------------------------------------------------- ingest


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


def bench_ingest(repeats: int, gigabytes: float, batch_size: int = 1024) -> dict[str, Any]:
    import pyarrow.parquet as pq

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    files, rows = write_ingest_data(tmp, gigabytes * 1e9)
    features = [f"px_{j}" for j in range(64)]
    nbytes = rows * (64 * 4 + 8)

    def raysweep_reader() -> int:
        train = ArraySet.from_parquet(files, features, "label")
        ctx, _ = TrainContext.in_process(train, train, {}, num_epochs=1)
        return sum(min(len(x), len(y)) for x, y in ctx.train_batches(0, batch_size))

    def pyarrow_reader() -> int:
        count = 0
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=[*features, "label"]):
                matrix = np.stack([batch.column(j).to_numpy() for j in range(64)], axis=1)
                x, y = torch.from_numpy(matrix), torch.from_numpy(batch.column(64).to_numpy())
                count += min(len(x), len(y))
        return count

    def one_batch() -> int:
        x, y = torch.zeros(batch_size, 64), torch.zeros(batch_size, dtype=torch.int64)
        count = 0
        while count < rows:
            batch = (x, y)
            count += len(batch[1])
        return count

    readers = {"pyarrow iter_batches + torch.from_numpy": pyarrow_reader, "raysweep reader + shard iterator":
               raysweep_reader, "one preallocated batch repeated": one_batch}
    seconds: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(repeats):
        for name, reader in readers.items():
            started = time.perf_counter()
            assert reader() >= rows - batch_size
            seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds["pyarrow iter_batches + torch.from_numpy"])
    out = [{"name": name, "rows_per_s": rows / statistics.median(v), "gb_per_s": nbytes / statistics.median(v) / 1e9,
            "rate_ratio": base / statistics.median(v)} for name, v in seconds.items()]
    on_disk = sum(os.path.getsize(f) for f in files)
    for path in files:
        os.remove(path)
    return {"entry": "ingest", "baseline": "pyarrow iter_batches + torch.from_numpy", "rows": out,
            "data_rows": rows, "data_gb": nbytes / 1e9, "parquet_gb_on_disk": on_disk / 1e9,
            "batch_size": batch_size}


# ---------------------------------------------------------------- search efficiency


def epochs_to_target(results: list[tuple[str, dict[str, Any]]], target: float) -> tuple[int, bool]:
    """Epochs consumed (every result is one epoch) until val_loss <= target."""
    for i, (_, result) in enumerate(results):
        if result["val_loss"] <= target:
            return i + 1, True
    return len(results), False


def bench_search(data_root: Path, seeds: int, target: float, trials: int, max_epochs: int) -> dict[str, Any]:
    storage = Path(tempfile.mkdtemp(prefix="bench-search-"))
    common = {"budget.num_trials": trials, "budget.max_concurrent_trials": 1, "scheduler.max_epochs": max_epochs,
              "scaling.num_workers": 1}
    methods = {
        "random, no early stopping": {"sampler.type": "random", "scheduler.type": "fifo"},
        "TPE + ASHA": {"sampler.type": "tpe", "sampler.n_startup_trials": 4, "scheduler.type": "asha",
                       "scheduler.grace_period": 1, "scheduler.reduction_factor": 3},
    }
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    for seed in range(seeds):
        for name, settings in methods.items():
            spec = digits_spec(data_root, storage, **common, **settings, **{"sampler.seed": seed, "seed": seed})
            _, recorder = sweep(spec, "search")
            epochs, reached = epochs_to_target(recorder.results, target)
            samples[name].append({"seed": seed, "epochs": epochs, "reached": reached,
                                  "total_epochs": len(recorder.results),
                                  "best_val_loss": min(r["val_loss"] for _, r in recorder.results)})
    base = statistics.median(s["epochs"] for s in samples["random, no early stopping"])
    rows = [{"name": name, "median_epochs_to_target": statistics.median(s["epochs"] for s in v),
             "reached": sum(s["reached"] for s in v), "seeds": len(v),
             "fewer_epochs_factor": base / statistics.median(s["epochs"] for s in v), "per_seed": v}
            for name, v in samples.items()]
    return {"entry": "search", "baseline": "random, no early stopping", "target_val_loss": target,
            "trials": trials, "max_epochs": max_epochs, "rows": rows}


# ---------------------------------------------------------------- sweep throughput and tracking cost


def bench_throughput(train: ArraySet, validation: ArraySet, repeats: int, trials: int = 4) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    root = write_sets(tmp / "data", train, validation, tile=16)
    spec = digits_spec(root, tmp / "results", **{
        "scaling.num_workers": 1, "scheduler.type": "fifo", "scheduler.max_epochs": 8, "budget.num_trials": trials,
        "sampler.type": "random", **{f"params.{k}": v for k, v in PARAMS.items()}}, searched=("lr",))
    samples = []
    for _ in range(repeats):
        outcome, recorder = sweep(spec, "throughput")
        by_trial: dict[str, list[dict[str, Any]]] = {}
        for trial_id, result in recorder.results:
            by_trial.setdefault(trial_id, []).append(result)
        own = [training_seconds(v) for v in by_trial.values()]
        concurrent = min(2, trials)
        ideal = sum(own) / concurrent
        samples.append({"wall_s": outcome.wall_s, "ideal_s": ideal, "ratio": outcome.wall_s / ideal,
                        "trial_training_s": [round(v, 2) for v in own], "results": len(recorder.results),
                        "overhead_per_result_s": (outcome.wall_s - ideal) * concurrent / len(recorder.results)})
    pick = sorted(samples, key=lambda s: s["ratio"])[len(samples) // 2]
    return {"entry": "throughput", "baseline": "ideal: sum of the trials' training time / 2 concurrent trials",
            "trials": trials, "median": pick, "samples": samples}


def bench_tracking(train: ArraySet, validation: ArraySet, repeats: int) -> dict[str, Any]:
    from raysweep.tracking.store import RunStore

    tmp = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    root = write_sets(tmp / "data", train, validation, tile=8)
    spec = digits_spec(root, tmp / "results", **{
        "scaling.num_workers": 1, "scheduler.type": "fifo", "scheduler.max_epochs": 10, "budget.num_trials": 1,
        **{f"params.{k}": v for k, v in PARAMS.items()}}, searched=("lr",))
    store = RunStore(f"sqlite:///{tmp / 'mlflow.db'}", "bench-tracking")
    seconds: dict[str, list[float]] = {"no tracking": [], "raysweep MLflow logging": []}
    for _ in range(repeats):
        for name, chosen in (("no tracking", None), ("raysweep MLflow logging", store)):
            _, recorder = sweep(spec, "tracking", store=chosen)
            seconds[name].append(training_seconds([r for _, r in recorder.results]))
    base = statistics.median(seconds["no tracking"])
    rows = [{"name": name, "training_s": statistics.median(v), "cost_pct": 100 * (statistics.median(v) / base - 1),
             "samples": [round(x, 3) for x in v]} for name, v in seconds.items()]
    return {"entry": "tracking", "baseline": "no tracking", "epochs": 10, "rows": rows}


# ---------------------------------------------------------------- report

TARGETS = {
    "overhead": "one-worker trial <= 0.25x bare start-up; two-worker trial < 1x",
    "step": "ratio <= 1.05 for steps >= 15 ms, else <= +0.5 ms/step",
    "dp": "steady state within 1.05x of plain DDP",
    "ingest": ">= 0.8x the pyarrow rate",
    "search": ">= 3x fewer epochs to the target than random search",
    "throughput": "wall <= 1.3x ideal for trials of >= 10 s",
    "tracking": "MLflow logging <= 2% of training time",
}


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(cell(v) for v in row) + " |" for row in rows], ""]


def markdown(results: list[dict[str, Any]], machine: str) -> str:
    lines = [f"Machine: {machine}", ""]
    for r in results:
        entry = r["entry"]
        lines.append(f"**{entry}** (baseline: {r['baseline']}; target: {TARGETS[entry]})")
        lines.append("")
        if entry == "overhead":
            lines += _table(["trial", "start-up s (median)", "ratio", "first trial of a sweep s"],
                            [[x["name"], x["startup_s"], x["ratio"], x.get("first_trial_of_sweep_s", "-")]
                             for x in r["rows"]])
        elif entry == "step":
            lines += _table(["path", "ms/step", "ratio", "added ms/step"],
                            [[x["name"], x["ms_per_step"], x["ratio"], x["added_ms_per_step"]] for x in r["rows"]])
            lines += [f"{r['model']}, {r['threads']} threads. Plain trainer losses equal the hand-written "
                      f"loop's to 5 decimals: {r['plain_losses_equal_to_5_decimals']}", ""]
        elif entry == "dp":
            lines += _table(["path", "set-up s", "ms/step", "step ratio"],
                            [[x["name"], x["setup_s"], x["ms_per_step"], x["step_ratio"]] for x in r["rows"]])
            lines += [f"{r['model']}; {r['rows_train']} rows, {r['steps_per_epoch_per_rank']} steps/epoch/rank.", ""]
        elif entry == "ingest":
            lines += _table(["reader", "rows/s", "GB/s", "rate ratio"],
                            [[x["name"], f"{x['rows_per_s']:.3g}", x["gb_per_s"], x["rate_ratio"]] for x in r["rows"]])
            lines += [f"{r['data_rows']} rows x 64 float32 + int64 label = {r['data_gb']:.2f} GB in memory "
                      f"({r['parquet_gb_on_disk']:.2f} GB Parquet), batch {r['batch_size']}.", ""]
        elif entry == "search":
            lines += _table(["method", "median epochs to target", "reached", "fewer-epochs factor"],
                            [[x["name"], x["median_epochs_to_target"], f"{x['reached']}/{x['seeds']}",
                              x["fewer_epochs_factor"]] for x in r["rows"]])
            lines += [f"Target val_loss <= {r['target_val_loss']}; {r['trials']} trials of up to "
                      f"{r['max_epochs']} epochs, one at a time; a seed that never reaches it counts all its "
                      "epochs.", ""]
        elif entry == "throughput":
            m = r["median"]
            lines += _table(["trials", "wall s", "ideal s", "ratio", "overhead per result s"],
                            [[r["trials"], m["wall_s"], m["ideal_s"], m["ratio"], m["overhead_per_result_s"]]])
            lines += [f"Trials' own training time (s): {m['trial_training_s']}.", ""]
        elif entry == "tracking":
            lines += _table(["trial", "training s", "cost %"],
                            [[x["name"], x["training_s"], x["cost_pct"]] for x in r["rows"]])
    return "\n".join(lines)


ENTRIES = ("overhead", "step", "dp", "ingest", "search", "throughput", "tracking")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", default=",".join(ENTRIES), help="comma-separated entries: " + ",".join(ENTRIES))
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--ingest-gb", type=float, default=1.1)
    parser.add_argument("--search-seeds", type=int, default=5)
    parser.add_argument("--search-target", type=float, default=0.12)
    args = parser.parse_args()
    wanted = args.only.split(",")
    unknown = set(wanted) - set(ENTRIES)
    if unknown:
        parser.error(f"--only: unknown entries {sorted(unknown)}; known: {', '.join(ENTRIES)}")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    train, validation = load_digits_sets(tmp)
    if set(wanted) & {"overhead", "dp", "search", "throughput", "tracking"}:
        from raysweep.cluster.connect import connect
        from raysweep.config.profile import ClusterProfile

        os.environ.setdefault("RAYSWEEP_BASE_DIR", str(tmp))
        connect(ClusterProfile(name="bench", num_cpus=2))
    for entry in wanted:
        started = time.perf_counter()
        if entry == "overhead":
            results.append(bench_overhead(tmp, args.repeats))
        elif entry == "step":
            results.append(bench_step(train, validation, args.repeats))
        elif entry == "dp":
            results.append(bench_dp(train, validation, args.repeats))
        elif entry == "ingest":
            results.append(bench_ingest(args.repeats, args.ingest_gb))
        elif entry == "search":
            results.append(bench_search(tmp, args.search_seeds, args.search_target, trials=16, max_epochs=8))
        elif entry == "throughput":
            results.append(bench_throughput(train, validation, args.repeats))
        elif entry == "tracking":
            results.append(bench_tracking(train, validation, max(args.repeats, 3)))
        results[-1]["bench_wall_s"] = round(time.perf_counter() - started, 1)
        print(f"{entry}: done in {results[-1]['bench_wall_s']} s", flush=True)
        Path(args.out).write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    table = markdown(results, machine)
    Path(args.out).with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
