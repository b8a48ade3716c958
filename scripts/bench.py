"""Benchmarks, each side by side with its baseline in one run, alternating A and B.

    .venv/bin/python scripts/bench.py [--repeats 2] [--only overhead,step,...] [--out bench.json] [--quick]
                                      [--entry-timeout SECONDS] [--entry-timeout ENTRY=SECONDS ...]
                                      [--search-seeds 5] [--search-tasks digits_mlp,digits_cnn,diabetes_mlp]

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
- stream: the stream loader (rank 0 of 1) reading >= 1 GB of local Parquet, against
  pyarrow's dataset scanner with the same float32 conversion and thread count.
- stream_s3: the same on ~250 MB on a local SeaweedFS S3 server, against pyarrow's
  dataset scanner on the same s3:// objects.
- stream_ranks: 2 rank processes streaming their halves at once, against one
  streaming all (aggregate rows/s; 1 read thread each).
- stream_memory: peak RSS of a process streaming 4x a 512 MiB cap (decoded), against
  its RSS after imports; every row seen once.
- fingerprint: data_fingerprint's footer mode on 1,000 small files, local and on S3,
  against full mode (content hashes) locally.
- search: epochs consumed until a target validation loss, TPE + ASHA against
  random search without early stopping, same space and budget, several seeds, on
  three tasks (digits MLP, digits CNN, diabetes MLP regression), each with its own
  fixed target (--search-tasks picks some, --search-seeds sets the seeds).
- search_mo: the two-objective digits MLP sweep (val_loss, params_count; val_accuracy
  >= 0.9) with MultiObjectiveASHA against the same sweep without early stopping:
  hypervolume of the final Pareto front and epochs trained, several seeds.
- throughput: wall time of a sweep of trials of >= 10 s against the ideal (sum of
  the trials' own training time / concurrent trials).
- tracking: a trial's training time with raysweep's MLflow logging against the
  same trial with logging off.
- columns_memory, columns_transform, columns_padding: column shapes
  (raysweep.testing.columns_bench): a uint8 image column's host bytes per row against
  its Arrow size; PNG decoding in the trainer's transform, 2 transform workers against
  1; padded token batches against hand-written pyarrow-to-torch pad loops.
Each entry is registered with its target (raysweep.testing.bench); its JSON result
records "target" and "met". Prints the Markdown tables, writes JSON to --out (and the
tables to OUT.md), names the targets missed, and exits 1 when any was missed.
Every entry runs under a time limit (--entry-timeout; 1800 s unless the entry has its
own): an entry past it, or one that raises, is a failed entry (met false, "error",
"timed_out", and the "stage" it was in, e.g. "plain DDP baseline" or "raysweep dp"),
the Ray cluster and the processes it started are stopped, and the next entry runs.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raysweep.config.spec import LightningSpec
from raysweep.data.arrays import ArraySet
from raysweep.data.columns import Layout
from raysweep.data.examples import write_digits_parquet
from raysweep.data.shards import train_batch_indices
from raysweep.errors import one_line_cause
from raysweep.testing import columns_bench, fsdp_bench
from raysweep.testing.bench import DEFAULT_TIMEOUT_S, Registry, Stage, md_table, parse_time_limits, run_entries, stage
from raysweep.worker.context import TrainContext
from raysweep.worker.lightning import find_module_factory, fit
from trainers import digits_mlp, digits_mlp_lightning

PARAMS = {"batch_size": 64, "hidden": 512, "num_layers": 2, "lr": 0.01, "optimizer": "adam"}
EPOCHS = 3  # the first epoch is warm-up; steady state is the median of the rest
ENTRIES = Registry()


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
        block (`with bench.stage("x"):`): raysweep.testing.bench.stage."""
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
    failed = [t for t in result.state.trials.values() if not t.state.ended_well]
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
        ray.train.report({"first_step_unix": first, "epoch": 0, "report_unix": time.time()}, checkpoint=checkpoint)


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


def bare_sweep(arrays: Any, workers: int, trials: int, storage: str) -> list[tuple[float, float]]:
    """(start-up, teardown) of each trial of a Tune run of bare TorchTrainer trials:
    trial start -> first step, and the worker's last report -> trial end."""
    import functools

    from ray import tune

    from raysweep.driver.sweep import TRIAL_DRIVER_RESOURCES

    started: dict[str, float] = {}
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    ended: dict[str, float] = {}

    class Clock(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            started[trial.trial_id] = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            first.setdefault(trial.trial_id, result["first_step_unix"])
            last[trial.trial_id] = result["report_unix"]

        def on_trial_complete(self, iteration, trials, trial, **info):
            ended[trial.trial_id] = time.time()

    driver = functools.partial(bare_trial, arrays=arrays, workers=workers, storage=storage)
    tune.Tuner(
        tune.with_resources(driver, TRIAL_DRIVER_RESOURCES),
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=1),
        run_config=tune.RunConfig(name=f"bare-{time.time_ns()}", storage_path=storage, callbacks=[Clock()],
                                  verbose=0),
    ).fit()
    return [(first[t] - started[t], ended[t] - last[t]) for t in started]


def overhead_table(r: dict[str, Any]) -> list[str]:
    return md_table(["trial", "start-up s (median)", "ratio", "teardown s (median)", "fixed cost s", "fixed ratio",
                     "first trial of a sweep s"],
                    [[x["name"], x["startup_s"], x["ratio"], x["teardown_s"], x["fixed_s"], x["fixed_ratio"],
                      x.get("first_trial_of_sweep_s", "-")] for x in r["rows"]])


WARM = "raysweep, worker_group warm"


def overhead_met(r: dict[str, Any]) -> bool:
    one = next(x for x in r["rows"] if x["path"] == "raysweep" and x["workers"] == 1)
    warm = next(x for x in r["rows"] if x["path"] == WARM and x["workers"] == 2)
    return one["ratio"] <= 0.25 and warm["fixed_ratio"] <= 0.5


@ENTRIES.register("overhead", target="one-worker trial <= 0.25x bare start-up; two-worker trial's fixed cost "
                  "(start-up + last report -> trial end) <= 0.5x bare, with scaling.worker_group: warm (the "
                  "default Train worker group reported beside it)", table=overhead_table, met=overhead_met)
def bench_overhead(bench: Bench, trials: int = 2) -> dict[str, Any]:
    import ray

    from raysweep.data.arrays import load_arrays
    from raysweep.data.files import resolve_data

    bench.ray()
    data_root, repeats = bench.tmp, bench.args.repeats
    storage = Path(scratch_dir(prefix="bench-overhead-"))
    rows = []
    for workers in (1, 2):
        spec = digits_spec(data_root, storage, searched=("lr",), **{
            "scaling.num_workers": workers, "scheduler.type": "fifo", "scheduler.max_epochs": 1,
            "scheduler.grace_period": 1, "budget.num_trials": trials, "budget.max_concurrent_trials": 1,
            **{f"params.{k}": v for k, v in PARAMS.items()}})
        arrays = ray.put(load_arrays(resolve_data(spec.data, "bench")))
        paths = {"raysweep": spec}
        if workers > 1:
            paths[WARM] = spec.model_copy(update={"scaling": spec.scaling.model_copy(update={"worker_group": "warm"})})
        samples: dict[str, list[tuple[float, float]]] = {"bare TorchTrainer.fit": [], **{p: [] for p in paths}}
        cold: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(repeats):
            bench.stage(f"bare TorchTrainer.fit sweep, {workers} worker(s)")
            samples["bare TorchTrainer.fit"] += bare_sweep(arrays, workers, trials, str(storage))
            for path, path_spec in paths.items():
                bench.stage(f"{path} sweep, {workers} worker(s)")
                ours = [(t.startup_s, t.ended - t.last_report_unix) for t in trials_in_order(sweep(path_spec))]
                samples[path] += ours
                cold[path].append(ours[0][0])
        base = statistics.median(s for s, _ in samples["bare TorchTrainer.fit"])
        base_fixed = statistics.median(s + t for s, t in samples["bare TorchTrainer.fit"])
        for name, values in samples.items():
            median = statistics.median(s for s, _ in values)
            fixed = statistics.median(s + t for s, t in values)
            row = {"name": f"{name}, {workers} worker(s)", "path": name, "workers": workers, "startup_s": median,
                   "ratio": median / base, "teardown_s": statistics.median(t for _, t in values),
                   "fixed_s": fixed, "fixed_ratio": fixed / base_fixed,
                   "samples": [[round(s, 3), round(t, 3)] for s, t in values]}
            if name in cold:
                row["first_trial_of_sweep_s"] = statistics.median(cold[name])
            rows.append(row)
    return {"entry": "overhead", "baseline": "Tune trial calling a bare TorchTrainer.fit()",
            "trials_per_sweep": trials, "rows": rows}


# ---------------------------------------------------------------- step


BARE_LIGHTNING = "Lightning Trainer alone (same module and batches, no raysweep)"


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


def bare_lightning(train: ArraySet, params: dict[str, Any], seed: int = 0) -> tuple[list[dict], list[float]]:
    """Lightning without raysweep: the same LightningModule and batches through a plain
    `pytorch_lightning.Trainer` (no TrainContext, no report callback, no validation),
    timed from each epoch's start to its last batch's end, as raysweep times its own."""
    import pytorch_lightning as pl

    epochs = [[(torch.from_numpy(train.features[rows]), torch.from_numpy(train.labels[rows]))
               for rows in train_batch_indices(len(train), 0, 1, params["batch_size"], seed, epoch)]
              for epoch in range(EPOCHS)]

    class Loader:  # (the epoch set by the trainer, as raysweep's loader)
        epoch = 0

        def __iter__(self) -> Any:
            return iter(epochs[Loader.epoch])

        def __len__(self) -> int:
            return len(epochs[0])

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.started, self.last, self.seconds = 0.0, 0.0, []

        def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
            Loader.epoch = trainer.current_epoch
            self.started = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            self.last = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, *args: Any) -> None:
            self.seconds.append(self.last - self.started)
            losses.append(float(trainer.callback_metrics["train_loss"]))

    torch.manual_seed(seed)
    losses: list[float] = []
    timer = Timer()
    trainer = pl.Trainer(max_epochs=EPOCHS, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
                         accelerator="cpu", devices=1, callbacks=[timer])
    trainer.fit(digits_mlp_lightning.DigitsMLP(**params), train_dataloaders=Loader())
    return [{"samples_per_s": len(train) / s} for s in timer.seconds], losses


def step_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["path", "ms/step", "ratio", "added ms/step"],
                      [[x["name"], x["ms_per_step"], x["ratio"], x["added_ms_per_step"]] for x in r["rows"]]),
            f"{r['model']}, {r['threads']} threads. Plain trainer losses equal the hand-written "
            f"loop's to 5 decimals: {r['plain_losses_equal_to_5_decimals']}. raysweep's share of the Lightning "
            f"step (raysweep lightning - bare Lightning): {r.get('lightning_raysweep_share_ms', float('nan')):+.3f} ms",
            ""]


def step_met(r: dict[str, Any]) -> bool:
    """Every raysweep path: ratio <= 1.05 where the baseline step is >= 15 ms, else <= +0.5 ms/step."""
    base_ms = next(x["ms_per_step"] for x in r["rows"] if x["name"] == r["baseline"])
    ours = [x for x in r["rows"] if x["name"].startswith("raysweep")]
    if base_ms >= 15:
        return all(x["ratio"] <= 1.05 for x in ours)
    return all(x["added_ms_per_step"] <= 0.5 for x in ours)


@ENTRIES.register("step", target="ratio <= 1.05 for steps >= 15 ms, else <= +0.5 ms/step", table=step_table,
                  met=step_met)
def bench_step(bench: Bench) -> dict[str, Any]:
    train, validation, repeats = bench.train, bench.validation, bench.args.repeats
    batches = len(train_batch_indices(len(train), 0, 1, PARAMS["batch_size"], 0, 0))
    times: dict[str, list[float]] = {"hand-written loop": [], "raysweep plain": [], "raysweep lightning": [],
                                     BARE_LIGHTNING: []}
    losses: dict[str, list[float]] = {}
    for _ in range(repeats):
        bench.stage("hand-written loop")
        reports, losses["hand-written loop"] = hand_loop(train, PARAMS)
        times["hand-written loop"].append(step_seconds(reports, len(train), batches))

        bench.stage("raysweep plain")
        ctx, out = TrainContext.in_process(train, validation, PARAMS, num_epochs=EPOCHS)
        digits_mlp.train(ctx)
        times["raysweep plain"].append(step_seconds([m for m, _ in out], len(train), batches))
        losses["raysweep plain"] = [m["train_loss"] for m, _ in out]

        bench.stage("raysweep lightning")
        ctx, out = TrainContext.in_process(train, validation, PARAMS, num_epochs=EPOCHS)
        fit(ctx, find_module_factory(digits_mlp_lightning), LightningSpec())
        times["raysweep lightning"].append(step_seconds([m for m, _ in out], len(train), batches))
        losses["raysweep lightning"] = [m["train_loss"] for m, _ in out]

        bench.stage(BARE_LIGHTNING)
        reports, losses[BARE_LIGHTNING] = bare_lightning(train, PARAMS)
        times[BARE_LIGHTNING].append(step_seconds(reports, len(train), batches))
    base = statistics.median(times["hand-written loop"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append({"name": name, "ms_per_step": median * 1e3, "ratio": median / base,
                     "added_ms_per_step": (median - base) * 1e3,
                     "losses": [round(v, 6) for v in losses[name]]})
    plain_equal = np.allclose(losses["raysweep plain"], losses["hand-written loop"], atol=5e-6)
    by_name = {x["name"]: x["ms_per_step"] for x in rows}
    return {"entry": "step", "baseline": "hand-written loop", "threads": torch.get_num_threads(),
            "model": "MLP 64-512-512-10, batch 64", "rows": rows,
            "plain_losses_equal_to_5_decimals": bool(plain_equal),
            # What raysweep adds to a Lightning step, beyond Lightning's own (its Trainer on the same batches).
            "lightning_raysweep_share_ms": by_name["raysweep lightning"] - by_name[BARE_LIGHTNING]}


# ---------------------------------------------------------------- data-parallel


DDP_TIMEOUT_S = 300.0  # plain DDP baseline: the process group's timeout, and the parent's deadline for its ranks
DDP_FAILURES = ("raise", "exit", "sigint", "hang")  # what _ddp_process can plant on one rank (tests)


def _ddp_process(rank: int, world: int, port: int, path: str, epochs: int, launched: float, timeout_s: float,
                 fail: str = "", fail_rank: int = -1) -> None:
    """One rank of the plain-DDP baseline (run by torch's spawn._wrap).

    It joins the parent's c10d TCPStore at `port` as a client and rendezvouses through
    it (init_process_group(store=...), timeout `timeout_s`): no rank binds a port it
    was told, so none can lose one to another process. It writes where it is
    ("bench/stage/<rank>") and, last, its result ("bench/done/<rank>") to the store:
    the parent names each rank's last stage when something goes wrong, and tells a rank
    that finished from one that left early with exit code 0 (spawn._wrap exits 0 after
    a KeyboardInterrupt, i.e. a SIGINT). SIGUSR1 prints its stacks to stderr (the
    parent sends it to ranks past the deadline). It ends with os._exit(0), skipping
    the DDP model's teardown, which can deadlock (see the comment there).

    `fail` on rank `fail_rank`, for tests, plants an early exit before the rendezvous:
    "raise" (exit code 1), "exit" (code 0, nothing done), "sigint" (code 0, through
    SIGINT and spawn._wrap), "hang" (sleeps past any deadline).
    """
    import datetime
    import faulthandler
    import signal

    import torch.distributed as dist

    torch.set_num_threads(1)  # as a Ray Train worker with 1 CPU
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timeout)

    def progress(stage: str) -> None:
        store.set(f"bench/stage/{rank}", stage)

    if fail and rank == fail_rank:
        progress(f"planted failure {fail!r}")
        if fail == "raise":
            raise RuntimeError(f"planted failure on rank {rank}")
        if fail == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(60)
        if fail == "hang":
            time.sleep(3600)
        return
    progress("init_process_group")
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
    data = np.load(path)
    features, labels = data["features"], data["labels"]
    torch.manual_seed(0)
    progress("DDP set-up")
    model = torch.nn.parallel.DistributedDataParallel(digits_mlp.build_model(PARAMS))
    optimizer = digits_mlp.build_optimizer(model, PARAMS)
    loss_fn = torch.nn.CrossEntropyLoss()
    first, epoch_s = None, []
    for epoch in range(epochs):
        progress(f"epoch {epoch}")
        started = time.perf_counter()
        for rows in train_batch_indices(len(labels), rank, world, PARAMS["batch_size"], 0, epoch):
            x, y = torch.from_numpy(features[rows]), torch.from_numpy(labels[rows])
            first = first or time.time()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        epoch_s.append(time.perf_counter() - started)
    progress("done")
    assert first is not None
    store.set(f"bench/done/{rank}", json.dumps({"setup_s": first - launched, "epoch_s": epoch_s}))
    store.get(f"bench/done/{rank}")  # a round trip: the store holds the result before this process goes
    # Leave without destroy_process_group and without tearing the DDP model down: either can
    # deadlock (torch 2.13; both ranks stuck in destroy_process_group once in a loaded test
    # run). The DDP
    # Reducer holds the last reference to the ProcessGroupGloo; freeing the model when this
    # frame is cleared (the GIL held) runs ~ProcessGroupGloo, which locks the group's work
    # mutex, while a gloo worker thread (runLoop) holds that mutex as it drops the last
    # allreduce's AsyncWork, whose ThreadLocalState decrefs a Python object and waits for the
    # GIL (gdb: main thread ~Reducer -> ~ProcessGroupGloo -> pthread_mutex_lock; worker
    # ~AsyncAllreduceWork -> ~ThreadLocalState -> take_gil). 2 of 30 runs of the old baseline
    # hung so: one rank finished and exited 0 (torch's join counts that as success), the other
    # sat in spawn._wrap for good. Cf. pytorch/pytorch#56297 (blocking destructors and the GIL).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _store_text(store: Any, key: str) -> str | None:
    return store.get(key).decode() if store.check([key]) else None


def plain_ddp(train: ArraySet, epochs: int, tmp: Path, *, timeout_s: float = DDP_TIMEOUT_S, fail: str = "",
              fail_rank: int = 1, world: int = 2) -> dict[str, Any]:
    """Plain torch.distributed DDP on gloo in `world` spawned processes: rank 0's
    {"setup_s", "epoch_s"}.

    The rendezvous has no race for a port: this process binds 127.0.0.1 port 0 and
    keeps the socket, serves the c10d TCPStore on it as master (master_listen_fd), and
    the ranks join as clients (gloo binds port 0 for its own connections). The process
    group's timeout is `timeout_s`.

    Joins the ranks with a deadline (start_processes(join=False), join(timeout) in a
    loop) and raises a one-line RuntimeError naming the rank, its exit code or error
    and every rank's last stage, the other ranks killed, instead of waiting:
    - a rank exits with an error or a signal: at once (torch's join);
    - a rank exits with code 0 before it finished (SIGINT: spawn._wrap exits 0 on a
      KeyboardInterrupt, and torch's join counts that as success): at once;
    - ranks still running `timeout_s` after the launch: their stacks go to stderr
      (SIGUSR1, faulthandler), then they are killed.
    `fail`, `fail_rank`: a planted early exit (see _ddp_process), for tests.
    """
    import datetime
    import signal
    import socket

    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException, ProcessRaisedException

    if fail and fail not in DDP_FAILURES:
        raise ValueError(f"fail={fail!r}: one of {DDP_FAILURES}")
    path = tmp / "ddp.npz"
    np.savez(path, features=train.features, labels=train.labels)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4 * world)
    store = dist.TCPStore("127.0.0.1", listener.getsockname()[1], is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=timeout_s), master_listen_fd=listener.fileno())

    def stages() -> str:
        return ", ".join(f"rank {r} at {_store_text(store, f'bench/stage/{r}') or 'start'!r}" for r in range(world))

    launched = time.time()
    deadline = time.monotonic() + timeout_s
    ranks = mp.start_processes(_ddp_process, nprocs=world, join=False, start_method="spawn",
                               args=(world, store.port, str(path), epochs, launched, timeout_s, fail, fail_rank))
    try:
        while not ranks.join(timeout=0.5, grace_period=1.0):
            early = [r for r, p in enumerate(ranks.processes)
                     if p.exitcode == 0 and _store_text(store, f"bench/done/{r}") is None]
            if early:
                raise RuntimeError(
                    f"plain DDP: rank {early[0]} exited with code 0 before it finished (torch's spawn._wrap exits 0 "
                    f"after a KeyboardInterrupt, e.g. SIGINT); {stages()}; the other ranks killed")
            if time.monotonic() > deadline:
                alive = [r for r, p in enumerate(ranks.processes) if p.is_alive()]
                for r in alive:
                    os.kill(ranks.processes[r].pid, signal.SIGUSR1)  # their stacks to stderr
                time.sleep(1)
                raise RuntimeError(f"plain DDP: rank(s) {alive} still running {timeout_s:g} s after the launch; "
                                   f"{stages()}; killed (their stacks are on stderr)")
    except ProcessException as exc:
        process = ranks.processes[exc.error_index]
        cause = one_line_cause(str(exc)) if isinstance(exc, ProcessRaisedException) else str(exc)
        raise RuntimeError(f"plain DDP: rank {exc.error_index} (pid {exc.error_pid}, exit code {process.exitcode}) "
                           f"failed: {cause}; {stages()}; the other ranks killed") from None
    finally:
        for process in ranks.processes:
            if process.is_alive():
                process.kill()
        for process in ranks.processes:
            process.join(10)
        listener.close()
    return json.loads(_store_text(store, "bench/done/0") or "{}")


def dp_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["path", "set-up s", "ms/step", "step ratio"],
                      [[x["name"], x["setup_s"], x["ms_per_step"], x["step_ratio"]] for x in r["rows"]]),
            f"{r['model']}; {r['rows_train']} rows, {r['steps_per_epoch_per_rank']} steps/epoch/rank.", ""]


@ENTRIES.register("dp", target="steady state within 1.05x of plain DDP", table=dp_table, timeout_s=900,
                  met=lambda r: next(x["step_ratio"] for x in r["rows"] if x["name"] == "raysweep") <= 1.05)
def bench_dp(bench: Bench, tile: int = 8, epochs: int = 5) -> dict[str, Any]:
    import ray

    from raysweep.data.arrays import load_arrays
    from raysweep.data.files import resolve_data
    from raysweep.driver.plan import plan_from_spec
    from raysweep.driver.trainer import build_trainer
    from raysweep.worker.plan import ExecutionMode

    bench.ray()
    bench.stage("data and run plan")
    train, validation, repeats = bench.train, bench.validation, bench.args.repeats
    tmp = Path(scratch_dir(prefix="bench-dp-"))
    root = write_sets(tmp / "data", train, validation, tile)
    spec = digits_spec(root, tmp / "results", **{"scaling.num_workers": 2, "scheduler.max_epochs": epochs,
                                                 "checkpoint.num_to_keep": epochs})
    data = resolve_data(spec.data, "bench")
    tiled, tiled_validation = load_arrays(data)
    plan = plan_from_spec(spec, str(tmp / "results"), ray.put((tiled, tiled_validation)),
                          ExecutionMode.WORKER_GROUP).with_params(PARAMS)
    batches = len(train_batch_indices(len(tiled), 0, 2, PARAMS["batch_size"], 0, 0))
    setup: dict[str, list[float]] = {"plain DDP (gloo)": [], "raysweep": []}
    step: dict[str, list[float]] = {"plain DDP (gloo)": [], "raysweep": []}
    for i in range(repeats):
        bench.stage("plain DDP baseline")
        ddp = plain_ddp(tiled, epochs, tmp)
        setup["plain DDP (gloo)"].append(ddp["setup_s"])
        step["plain DDP (gloo)"].append(statistics.median(ddp["epoch_s"][1:]) / batches)
        bench.stage("raysweep dp")
        started = time.time()
        result = build_trainer(plan, f"dp-{i}", callbacks=[]).fit()
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


RAYSWEEP_READER = "raysweep reader + shard iterator"


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


def ingest_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["reader", "rows/s", "GB/s", "rate ratio"],
                      [[x["name"], f"{x['rows_per_s']:.3g}", x["gb_per_s"], x["rate_ratio"]] for x in r["rows"]]),
            f"{r['data_rows']} rows x 64 float32 + int64 label = {r['data_gb']:.2f} GB in memory "
            f"({r['parquet_gb_on_disk']:.2f} GB Parquet), batch {r['batch_size']}.", ""]


@ENTRIES.register("ingest", target=">= 0.8x the pyarrow rate", table=ingest_table,
                  met=lambda r: next(x["rate_ratio"] for x in r["rows"] if x["name"] == RAYSWEEP_READER) >= 0.8)
def bench_ingest(bench: Bench, batch_size: int = 1024) -> dict[str, Any]:
    import pyarrow.parquet as pq

    repeats, gigabytes = bench.args.repeats, bench.args.ingest_gb
    tmp = Path(scratch_dir(prefix="bench-ingest-"))
    bench.stage("write the data")
    files, rows = write_ingest_data(tmp, gigabytes * 1e9)
    features = [f"px_{j}" for j in range(64)]
    nbytes = rows * (64 * 4 + 8)

    def raysweep_reader() -> int:
        train = ArraySet.from_parquet(files, Layout.scalars(features, "label", "int64"))
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

    readers = {"pyarrow iter_batches + torch.from_numpy": pyarrow_reader, RAYSWEEP_READER: raysweep_reader,
               "one preallocated batch repeated": one_batch}
    seconds: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(repeats):
        for name, reader in readers.items():
            bench.stage(name)
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


# ---------------------------------------------------------------- stream loader and data fingerprint


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


def stream_table(r: dict[str, Any]) -> list[str]:
    where = "on the SeaweedFS S3 server (127.0.0.1)" if r["storage"] == "s3" else "local, in the page cache"
    return [*md_table(["reader", "rows/s", "GB/s", "rate ratio"],
                      [[x["name"], f"{x['rows_per_s']:.3g}", x["gb_per_s"], x["rate_ratio"]] for x in r["rows"]]),
            f"{r['data_rows']} rows x 64 float32 + int64 label = {r['data_gb']:.2f} GB decoded "
            f"({r['parquet_gb']:.2f} GB Parquet, {r['files']} files, row groups of 65536 rows, {where}); "
            f"1 rank, window {r['window_rows']}, prefetch {r['prefetch_windows']}, batch {r['batch_size']}; "
            f"{r['threads']} threads: the loader's read_threads = pyarrow's CPU and I/O pools (both readers). "
            f"Medians of {r['repeats']}.", ""]


def stream_vs_pyarrow(bench: Bench, entry: str, gigabytes: float, s3: bool) -> dict[str, Any]:
    """One epoch of the stream loader (rank 0 of 1) against pyarrow's dataset scanner
    with the same conversion (raysweep.data.arrays.to_matrix) on the same files,
    alternating, same thread count."""
    import contextlib
    import shutil

    import pyarrow.dataset as ds

    from raysweep.data.arrays import to_matrix
    from raysweep.data.storage import filesystem
    from raysweep.testing.data_bench import arrow_threads, s3_environment
    from tests.support.seaweed import S3Server

    repeats, threads = bench.args.repeats, STREAM_THREADS
    tmp = Path(scratch_dir(prefix=f"bench-{entry}-"))
    try:
        bench.stage("write the data")
        files, rows = write_stream_data(tmp / "data", gigabytes)
        parquet = sum(os.path.getsize(f) for f in files)
        with contextlib.ExitStack() as stack:
            root = str(tmp / "data")
            if s3:
                bench.stage("start the S3 server and upload")
                server = stack.enter_context(S3Server(tmp / "s3", stop_timeout=2))
                server.upload(tmp / "data", "bench/data")
                for path in files:
                    os.remove(path)  # read from the server only
                stack.enter_context(s3_environment(server))
                root = "s3://bench/data"
            data = resolved(root)
            features = list(data.features)
            split = stream_split(data, threads=threads)
            fs, _ = filesystem(data.train_files[0])
            paths = [filesystem(f)[1] for f in data.train_files]
            assert data.num_train_rows == rows

            def stream_loader(epoch: int) -> int:
                return sum(min(len(x), len(y)) for x, y in split.train_batches(0, 1, STREAM_BATCH, 0, epoch))

            def pyarrow_dataset(epoch: int) -> int:
                count = 0
                dataset = ds.dataset(paths, filesystem=fs, format="parquet")
                for batch in dataset.to_batches(columns=[*features, "label"], batch_size=STREAM_BATCH,
                                                use_threads=True):
                    matrix = np.empty((batch.num_rows, len(features)), dtype=np.float32)
                    labels = np.empty(batch.num_rows, dtype=np.int64)
                    to_matrix(batch, features, "label", matrix, labels)
                    x, y = torch.from_numpy(matrix), torch.from_numpy(labels)
                    count += min(len(x), len(y))
                return count

            readers = {STREAM_PYARROW: pyarrow_dataset, STREAM_LOADER: stream_loader}
            seconds: dict[str, list[float]] = {name: [] for name in readers}
            with arrow_threads(threads):
                for epoch in range(repeats):
                    for name, reader in readers.items():
                        bench.stage(name)
                        started = time.perf_counter()
                        seen = reader(epoch)
                        seconds[name].append(time.perf_counter() - started)
                        if seen != rows:
                            raise RuntimeError(f"{name}: {seen} rows in an epoch, the files hold {rows}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(seconds[STREAM_PYARROW])
    out = [{"name": name, "rows_per_s": rows / statistics.median(v),
            "gb_per_s": rows * ROW_BYTES / statistics.median(v) / 1e9, "rate_ratio": base / statistics.median(v),
            "seconds": [round(s, 3) for s in v]} for name, v in seconds.items()]
    return {"entry": entry, "baseline": STREAM_PYARROW, "rows": out, "storage": "s3" if s3 else "local",
            "data_rows": rows, "data_gb": rows * ROW_BYTES / 1e9, "parquet_gb": parquet / 1e9, "files": len(files),
            "window_rows": STREAM_WINDOW, "prefetch_windows": 2, "batch_size": STREAM_BATCH, "threads": threads,
            "repeats": repeats, "quick": bench.args.quick}


def stream_ratio(r: dict[str, Any]) -> float:
    return float(next(x["rate_ratio"] for x in r["rows"] if x["name"] == STREAM_LOADER))


@ENTRIES.register("stream", target=">= 0.9x pyarrow's dataset scanner (local Parquet, same threads)",
                  table=stream_table, met=lambda r: stream_ratio(r) >= 0.9)
def bench_stream(bench: Bench) -> dict[str, Any]:
    return stream_vs_pyarrow(bench, "stream", stream_size(bench, "stream_gb"), s3=False)


@ENTRIES.register("stream_s3", target=">= 0.9x pyarrow's dataset scanner on the same s3:// data",
                  table=stream_table, met=lambda r: stream_ratio(r) >= 0.9)
def bench_stream_s3(bench: Bench) -> dict[str, Any]:
    return stream_vs_pyarrow(bench, "stream_s3", stream_size(bench, "s3_gb"), s3=True)


def child_job(data: Any, rank: int, world_size: int, settings: dict[str, int], **extra: Any) -> dict[str, Any]:
    from raysweep.data.loader import stream_sources
    from raysweep.testing.data_bench import source_job

    return {"source": source_job(stream_sources(data)[0]), "rank": rank, "world_size": world_size,
            "batch_size": STREAM_BATCH, "settings": settings, **extra}


STREAM_RANK_LAYOUTS = {  # name: (reader, processes)
    "stream loader, 1 rank, all rows": ("stream", 1),
    "stream loader, 2 ranks, half each": ("stream", 2),
    "control: pyarrow iter_batches, 1 process, all files": ("pyarrow", 1),
    "control: pyarrow iter_batches, 2 processes, half the files each": ("pyarrow", 2),
}


def ranks_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["processes", "aggregate rows/s", "per-process rows/s", "CPU s per M rows", "cores used",
                       "speed-up", "every row once"],
                      [[x["name"], f"{x['rows_per_s']:.3g}", f"{x['per_rank_rows_per_s']:.3g}",
                        x["cpu_s_per_mrow"], x["cores_used"], x["speedup"], x["every_row_once"]] for x in r["rows"]]),
            f"{r['data_rows']} rows ({r['data_gb']:.2f} GB decoded, {r['files']} local files in the page cache), "
            f"{r['epochs']} epochs per timed run; every process started with the others, timed from a common go "
            "after its imports and a 2-batch warm-up; read_threads 1, pyarrow CPU and I/O pools 1 thread, torch "
            f"1 thread; window {r['window_rows']}, batch {r['batch_size']}; {os.cpu_count()} CPUs (shared with "
            "other work; cores used: the processes' CPU time / wall time). Speed-up: against the same reader "
            "in 1 process; the pyarrow rows are a control for what the machine allows, not the target. "
            f"Medians of {r['repeats']}.", ""]


@ENTRIES.register("stream_ranks", target="2 ranks' aggregate rows/s >= 1.6x one rank's", table=ranks_table,
                  met=lambda r: next(x["speedup"] for x in r["rows"]
                                     if x["name"] == "stream loader, 2 ranks, half each") >= 1.6)
def bench_stream_ranks(bench: Bench, epochs: int = 4) -> dict[str, Any]:
    import shutil

    from raysweep.testing.data_bench import add_up, column_sums, run_together, sums_match

    repeats = bench.args.repeats
    tmp = Path(scratch_dir(prefix="bench-stream-ranks-"))
    try:
        bench.stage("write the data")
        files, rows = write_stream_data(tmp / "data", stream_size(bench, "ranks_gb"))
        data = resolved(str(tmp / "data"))
        expected = column_sums(data.train_files, "px_0", "label")
        settings = {"window_rows": STREAM_WINDOW, "prefetch_windows": 2, "read_threads": 1}
        extra = {"arrow_threads": 1, "torch_threads": 1, "warmup": True, "epochs": epochs}
        rates: dict[str, list[float]] = {name: [] for name in STREAM_RANK_LAYOUTS}
        per_rank: dict[str, list[float]] = {name: [] for name in STREAM_RANK_LAYOUTS}
        cpu: dict[str, list[float]] = {name: [] for name in STREAM_RANK_LAYOUTS}
        cores: dict[str, list[float]] = {name: [] for name in STREAM_RANK_LAYOUTS}
        complete: dict[str, bool] = {name: True for name in STREAM_RANK_LAYOUTS}
        for repeat in range(repeats):
            for name, (reader, world) in STREAM_RANK_LAYOUTS.items():
                bench.stage(name)
                jobs = [child_job(data, r, world, settings, reader=reader, epoch=repeat * epochs, **extra)
                        for r in range(world)]
                results = run_together(jobs)
                wall = max(x["end"] for x in results) - min(x["start"] for x in results)
                rates[name].append(rows * epochs / wall)
                per_rank[name].append(statistics.median(x["rows"] / (x["end"] - x["start"]) for x in results))
                cpu[name].append(sum(x["cpu_s"] for x in results) / (rows * epochs / 1e6))
                cores[name].append(sum(x["cpu_s"] for x in results) / wall)
                complete[name] = complete[name] and sums_match(add_up(results), expected, rows, epochs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = []
    for name, (reader, _) in STREAM_RANK_LAYOUTS.items():
        single = next(n for n, (r, w) in STREAM_RANK_LAYOUTS.items() if r == reader and w == 1)
        out.append({"name": name, "rows_per_s": statistics.median(rates[name]),
                    "per_rank_rows_per_s": statistics.median(per_rank[name]),
                    "cpu_s_per_mrow": statistics.median(cpu[name]), "cores_used": statistics.median(cores[name]),
                    "speedup": statistics.median(rates[name]) / statistics.median(rates[single]),
                    "every_row_once": complete[name], "samples_rows_per_s": [round(x) for x in rates[name]]})
    return {"entry": "stream_ranks", "baseline": "the stream loader, 1 rank streaming all rows", "rows": out,
            "data_rows": rows, "data_gb": rows * ROW_BYTES / 1e9, "files": len(files), "epochs": epochs,
            "window_rows": STREAM_WINDOW, "batch_size": STREAM_BATCH, "repeats": repeats, "quick": bench.args.quick}


def memory_table(r: dict[str, Any]) -> list[str]:
    mib = 2**20
    return [*md_table(["process", "RSS after imports MiB", "peak RSS MiB", "streaming increment MiB", "cap MiB",
                       "rows seen / rows", "every row once"],
                      [["stream one epoch", r["rss_after_imports"] / mib, r["peak_rss"] / mib,
                        r["increment"] / mib, r["cap"] / mib, f"{r['rows_seen']}/{r['data_rows']}",
                        r["every_row_once"]]]),
            f"{r['data_gb_decoded']:.2f} GB decoded ({r['data_over_cap']:.1f}x the cap; {r['parquet_gb']:.2f} GB "
            f"Parquet, {r['files']} files), 1 rank, default settings (window {r['settings']['window_rows']}, "
            f"prefetch {r['settings']['prefetch_windows']}, read_threads {r['settings']['read_threads']}), "
            f"batch {r['batch_size']}; epoch {r['epoch_s']:.1f} s. The cap is checked, not enforced: the child's "
            "peak RSS (VmHWM, imports of torch + pyarrow included) against it, worst of "
            f"{r['repeats']}; RLIMIT_AS is unusable with torch's reservations and no cgroup is ours. "
            f"The loader's own estimate (raysweep.data.stream's docstring): {r['loader_bound'] / mib:.0f} MiB. "
            f"pyarrow pool: {r['arrow_pool']}."
            + (" pandas was imported while streaming (in the increment)." if r["pandas_imported"] else ""), ""]


def memory_met(r: dict[str, Any]) -> bool | None:
    """None when the data is under 4x the cap (a --quick run): the target is for that size."""
    if r["data_over_cap"] < 4:
        return None
    return r["peak_rss"] <= r["cap"] and r["every_row_once"]


@ENTRIES.register("stream_memory", target="peak RSS <= 512 MiB streaming 4x that (decoded), every row seen",
                  table=memory_table, met=memory_met)
def bench_stream_memory(bench: Bench) -> dict[str, Any]:
    import dataclasses
    import shutil

    from raysweep.data.shards import StreamSettings
    from raysweep.testing.data_bench import column_sums, run_together, sums_match

    repeats = bench.args.repeats
    settings = dataclasses.asdict(StreamSettings())
    tmp = Path(scratch_dir(prefix="bench-stream-memory-"))
    try:
        bench.stage("write the data")
        files, rows = write_stream_data(tmp / "data", stream_size(bench, "memory_gb"))
        parquet = sum(os.path.getsize(f) for f in files)
        data = resolved(str(tmp / "data"))
        expected = column_sums(data.train_files, "px_0", "label")
        bench.stage("stream in a child process")
        runs = [run_together([child_job(data, 0, 1, settings, epoch=epoch)])[0] for epoch in range(repeats)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    worst = max(runs, key=lambda x: x["peak_rss_kb"])
    decoded = rows * ROW_BYTES
    # raysweep.data.stream's docstring formula (windows decoded, as matrices, shuffled; cached row groups)
    bound = ((settings["prefetch_windows"] + 2) * 3 * settings["window_rows"] * ROW_BYTES
             + (settings["read_threads"] + 1) * 65536 * ROW_BYTES)
    return {"entry": "stream_memory", "baseline": "the same process's RSS after its imports",
            "cap": MEMORY_CAP, "rss_after_imports": worst["rss_after_imports_kb"] * 1024,
            "peak_rss": worst["peak_rss_kb"] * 1024,
            "increment": (worst["peak_rss_kb"] - worst["rss_after_imports_kb"]) * 1024,
            "peak_rss_samples_mib": [round(x["peak_rss_kb"] / 1024, 1) for x in runs],
            "rows_seen": worst["rows"], "data_rows": rows,
            "every_row_once": all(sums_match(x, expected, rows) for x in runs),
            "data_gb_decoded": decoded / 1e9, "data_over_cap": decoded / MEMORY_CAP, "parquet_gb": parquet / 1e9,
            "files": len(files), "settings": settings, "batch_size": STREAM_BATCH,
            "epoch_s": statistics.median(x["end"] - x["start"] for x in runs), "loader_bound": bound,
            "arrow_pool": worst["arrow_pool"], "pandas_imported": worst["pandas_imported"], "repeats": repeats,
            "quick": bench.args.quick}


def fingerprint_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["files at", "mode", "files", "fingerprint s", "ms/file", "resolve_data s"],
                      [[x["where"], x["mode"], x["files"], x.get("seconds", "failed"),
                        x.get("ms_per_file", x.get("error", "")), x["resolve_s"]] for x in r["rows"]]),
            f"{r['files']} training files of {r['rows_per_file']} rows x 8 float32 + label, and 1 validation file; "
            "the S3 files on the SeaweedFS server (127.0.0.1). Times: data_fingerprint(resolve_data(...), mode) "
            f"alone (resolve_data timed apart, once); medians of {r['repeats']}.", ""]


def fingerprint_met(r: dict[str, Any]) -> bool | None:
    footer = [x for x in r["rows"] if x["mode"] == "footer"]
    if any("error" in x for x in footer):
        return False
    if r["files"] < 1000:
        return None
    return all(x["seconds"] <= 10 for x in footer)


@ENTRIES.register("fingerprint", target="footer mode on 1,000 files <= 10 s, local and S3", table=fingerprint_table,
                  met=fingerprint_met)
def bench_fingerprint(bench: Bench, rows_per_file: int = 64) -> dict[str, Any]:
    import shutil

    from raysweep.testing.data_bench import s3_environment, write_small_files
    from raysweep.tracking.record import data_fingerprint
    from tests.support.seaweed import S3Server

    repeats, count = bench.args.repeats, stream_size(bench, "fingerprint_files")
    tmp = Path(scratch_dir(prefix="bench-fingerprint-"))
    try:
        bench.stage("write the files")
        write_small_files(tmp / "data", count, rows_per_file)
        bench.stage("start the S3 server and upload")
        with S3Server(tmp / "s3", stop_timeout=2) as server:
            server.upload(tmp / "data", "bench/data")
            cases = [("local", "footer"), ("local", "full"), ("S3", "footer")]
            found: dict[str, Any] = {}
            resolve_s: dict[str, float] = {}
            for where, root in (("local", str(tmp / "data")), ("S3", "s3://bench/data")):
                with s3_environment(server):
                    started = time.perf_counter()
                    found[where] = resolved(root)
                    resolve_s[where] = time.perf_counter() - started
            seconds: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
            errors: dict[tuple[str, str], str] = {}
            for _ in range(repeats):
                for where, mode in cases:
                    if (where, mode) in errors:
                        continue
                    bench.stage(f"{mode} mode, {where}")
                    with s3_environment(server):
                        started = time.perf_counter()
                        try:
                            fingerprint = data_fingerprint(found[where], mode)
                        except Exception as exc:  # report it in the table; the other cases still run
                            errors[(where, mode)] = f"{type(exc).__name__}: {str(exc)[:200]}"
                            continue
                        seconds[(where, mode)].append(time.perf_counter() - started)
                    assert isinstance(fingerprint, dict)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = count + 1
    rows = []
    for (where, mode), v in seconds.items():
        row: dict[str, Any] = {"where": where, "mode": mode, "files": total, "resolve_s": resolve_s[where]}
        if (where, mode) in errors:
            row["error"] = errors[(where, mode)]
        else:
            row.update(seconds=statistics.median(v), ms_per_file=statistics.median(v) / total * 1e3,
                       samples=[round(s, 3) for s in v])
        rows.append(row)
    return {"entry": "fingerprint", "baseline": "full mode (content hashes), local", "rows": rows,
            "files": count, "rows_per_file": rows_per_file, "repeats": repeats, "quick": bench.args.quick}


# ---------------------------------------------------------------- search efficiency


@dataclass(frozen=True)
class SearchTask:
    """One task of the search entries: a runnable spec, where its data comes from, and its
    target validation loss (fixed before any measured run, see SEARCH_TASKS)."""

    key: str
    """What --search-tasks names it by."""
    name: str
    spec: str
    target_val_loss: float
    values: tuple[tuple[str, Any], ...] = ()
    """Overrides of the spec besides data, storage, budget, scheduler and seeds."""
    data: str = "digits"
    """digits: the digits sets the script wrote under bench.tmp; diabetes: write_diabetes_parquet."""


# The targets were fixed before the measured runs, from pilot sweeps of the baseline (random
# search, no early stopping, 16 trials x 8 epochs) on seeds 100-109, never the seeds measured
# here (0..N-1): each is the lowest val_loss on a 0.01 grid that the baseline reached in at
# least 9 of the 10 pilot seeds. Pilot figures (reached, median epochs to it, seeds reaching it
# in their first trial; the pilot seeds' best val_loss):
# - digits MLP 0.12: 9/10, 67 epochs, 0/10 in the first trial; best 0.078-0.120.
# - digits CNN 0.10: 9/10, 42 epochs, 2/10 in the first trial (many configs of its space are
#   good); best 0.039-0.140.
# - diabetes MLP 0.53: 10/10, 43 epochs, 0/10 in the first trial; best 0.482-0.525 (predicting
#   the training mean scores 0.84 on this split, least squares 0.56).
SEARCH_TASKS = (
    SearchTask("digits_mlp", "digits MLP", "search_spaces/digits_mlp.yaml", 0.12),
    SearchTask("digits_cnn", "digits CNN (Lightning)", "search_spaces/digits_cnn.yaml", 0.10),
    SearchTask("diabetes_mlp", "diabetes MLP (regression)", "search_spaces/diabetes_mlp.yaml", 0.53,
               data="diabetes"),
)
SEARCH_TRIALS, SEARCH_MAX_EPOCHS = 16, 8
SEARCH_COMMON: dict[str, Any] = {"budget.num_trials": SEARCH_TRIALS, "budget.max_concurrent_trials": 1,
                 "scheduler.max_epochs": SEARCH_MAX_EPOCHS, "scaling.num_workers": 1}
SEARCH_BASELINE = "random, no early stopping"
SEARCH_METHODS: dict[str, dict[str, Any]] = {
    SEARCH_BASELINE: {"sampler.type": "random", "scheduler.type": "fifo"},
    # The same settings on every task and seed. Chosen on the pilot seeds 100-104 (against the
    # baseline's pilot sweeps, the targets above) among: these (geometric mean of the per-task
    # factors 1.30); reduction_factor 8 (1.17); n_startup_trials 2, multivariate TPE,
    # reduction_factor 4 (1.00); the same with n_startup_trials 4 (0: diabetes missed its
    # target in most seeds); n_startup_trials 8, reduction_factor 4 (0, likewise).
    "TPE + ASHA": {"sampler.type": "tpe", "sampler.n_startup_trials": 4, "scheduler.type": "asha",
                   "scheduler.grace_period": 1, "scheduler.reduction_factor": 3},
}


def search_data(bench: Bench, task: SearchTask) -> Path:
    """The folder with the task's train/ and validation/ splits (written once per run)."""
    from raysweep.data.examples import write_diabetes_parquet

    if task.data == "digits":
        return bench.tmp
    root = bench.tmp / task.data
    if not (root / "validation").exists():
        write_diabetes_parquet(root)
    return root


def search_spec(bench: Bench, task: SearchTask, storage: Path, **values: Any) -> Any:
    """The task's spec on its data, with `values` (and the task's own values) set."""
    from raysweep.config.load import load_spec

    root = search_data(bench, task)
    overrides = [f"data.train={root}/train", f"data.validation={root}/validation", f"storage_path={storage}"]
    overrides += [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                  for k, v in {**dict(task.values), **values}.items()]
    return load_spec(task.spec, overrides)


def epoch_rows(result: Any) -> list[list[dict[str, float]]]:
    """Each trial's epoch rows (those with val_loss), trials in the order they ran (one at a time)."""
    return [[row for row in trial.history if "val_loss" in row] for trial in trials_in_order(result)]


def epochs_to_target(results: list[dict[str, float]], target: float) -> int | None:
    """Epochs consumed (every result is one epoch) until val_loss <= target; None: never."""
    for i, result in enumerate(results):
        if result["val_loss"] <= target:
            return i + 1
    return None


def median_epochs(samples: list[dict[str, Any]]) -> float:
    """The median epochs to target over seeds, a seed that never reached it ranked last (inf)."""
    return statistics.median(math.inf if s["epochs"] is None else s["epochs"] for s in samples)


def fewer_epochs_factor(base: float, ours: float) -> float | None:
    """base / ours; 0.0 when ours never reached the target (median inf); None when the
    baseline's median never did (the target was out of its reach: undecided)."""
    if math.isinf(base):
        return None
    return 0.0 if math.isinf(ours) else base / ours


def geometric_mean(values: list[float]) -> float:
    return 0.0 if any(v == 0 for v in values) else math.exp(statistics.fmean(math.log(v) for v in values))


def search_overall(r: dict[str, Any]) -> float | None:
    """The geometric mean over tasks of TPE + ASHA's per-task fewer-epochs factor."""
    factors = [x["fewer_epochs_factor"] for x in r["rows"] if x["name"] != SEARCH_BASELINE]
    return None if not factors or any(f is None for f in factors) else geometric_mean(factors)


def search_table(r: dict[str, Any]) -> list[str]:
    def shown(v: float | None, none: str) -> Any:
        return none if v is None else v

    overall = r["overall_fewer_epochs_factor"]
    return [*md_table(["task", "target val_loss", "method", "median epochs to target", "reached",
                       "fewer-epochs factor", "epochs trained (median)"],
                      [[x["task"], x["target_val_loss"], x["name"], shown(x["median_epochs_to_target"], "not reached"),
                        f"{x['reached']}/{x['seeds']}", shown(x["fewer_epochs_factor"], "undecided"),
                        x["median_total_epochs"]]
                       for x in r["rows"]]),
            f"Overall fewer-epochs factor (geometric mean of the per-task factors): "
            f"{'undecided' if overall is None else f'{overall:.3g}'}. Per task: the baseline's median epochs to "
            f"the target over seeds / the method's; {r['trials']} trials of up to {r['max_epochs']} epochs per sweep, "
            "one at a time, epochs counted in the order they ran until the first epoch at or below the target; a "
            "seed that never reaches it ranks last (its epochs count as infinite). Seeds 0.."
            f"{r['seeds'] - 1} (sampler and trainer); TPE + ASHA: {json.dumps(r['methods']['TPE + ASHA'])}.", ""]


def search_met(r: dict[str, Any]) -> bool | None:
    overall = search_overall(r)
    return None if overall is None else overall >= 3


@ENTRIES.register("search", target=">= 3x fewer epochs to the target than random search overall (geometric mean "
                  "of the digits MLP, digits CNN and diabetes MLP factors)", table=search_table, met=search_met)
def bench_search(bench: Bench) -> dict[str, Any]:
    bench.ray()
    seeds = bench.args.search_seeds
    tasks = [t for t in SEARCH_TASKS if t.key in bench.args.search_tasks.split(",")]
    storage = Path(scratch_dir(prefix="bench-search-"))
    rows = []
    for task in tasks:
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in SEARCH_METHODS}
        for seed in range(seeds):
            for name, settings in SEARCH_METHODS.items():
                bench.stage(f"{task.key}: {name}, seed {seed}")
                spec = search_spec(bench, task, storage, **SEARCH_COMMON, **settings,
                                   **{"sampler.seed": seed, "seed": seed})
                result = sweep(spec)
                trials = epoch_rows(result)
                results = [row for rows_ in trials for row in rows_]
                samples[name].append({
                    "seed": seed, "epochs": epochs_to_target(results, task.target_val_loss),
                    "reached": epochs_to_target(results, task.target_val_loss) is not None,
                    "total_epochs": len(results), "best_val_loss": min(r["val_loss"] for r in results),
                    "sweep_wall_s": round(result.wall_s, 1),
                    "val_loss_by_trial": [[round(r["val_loss"], 4) for r in t] for t in trials]})
        base = median_epochs(samples[SEARCH_BASELINE])
        for name, v in samples.items():
            ours = median_epochs(v)
            rows.append({"task": task.name, "key": task.key, "spec": task.spec, "target_val_loss": task.target_val_loss,
                         "name": name, "median_epochs_to_target": None if math.isinf(ours) else ours,
                         "reached": sum(s["reached"] for s in v), "seeds": len(v),
                         "fewer_epochs_factor": fewer_epochs_factor(base, ours),
                         "median_total_epochs": statistics.median(s["total_epochs"] for s in v), "per_seed": v})
    r = {"entry": "search", "baseline": SEARCH_BASELINE, "trials": SEARCH_TRIALS, "max_epochs": SEARCH_MAX_EPOCHS,
         "seeds": seeds, "common": SEARCH_COMMON, "methods": SEARCH_METHODS, "rows": rows,
         "overall": "geometric mean over tasks of the per-task fewer-epochs factor (baseline median epochs to "
                    "target / TPE + ASHA's)"}
    r["overall_fewer_epochs_factor"] = search_overall(r)
    return r


# ---------------------------------------------------------------- multi-objective search efficiency


MO_SPEC = "search_spaces/digits_mlp_pareto.yaml"
MO_BASELINE, MO_ASHA = "no early stopping (FIFO)", "MultiObjectiveASHA"
MO_METHODS: dict[str, dict[str, Any]] = {MO_BASELINE: {"scheduler.type": "fifo"},
                                         MO_ASHA: {"scheduler.type": "asha"}}  # the spec's grace period and factor
MO_CHANCE_VAL_LOSS = 2.31
"""The hypervolume's reference val_loss: just above ln 10 = 2.303, the cross-entropy of a
uniform guess over the 10 digits (chance level)."""


def largest_params_count(spec: Any) -> float:
    """The params_count of the largest model the spec's space allows: digits_mlp's size grows
    with hidden and num_layers, so the largest is the space's highest hidden at its most layers
    (the reference's params_count: a trial of exactly that size adds no volume)."""
    space = spec.space
    hidden = space["hidden"].high if "hidden" in space else spec.params["hidden"]
    layers = max(space["num_layers"].choices) if "num_layers" in space else spec.params.get("num_layers", 1)
    model = digits_mlp.build_model({"hidden": hidden, "num_layers": layers})
    return float(sum(p.numel() for p in model.parameters()))


def mo_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["method", "hypervolume, fraction of the reference box (median)", "front size (median)",
                       "epochs trained (median)", "hypervolume ratio (median)", "epochs ratio (median)"],
                      [[x["name"], x["median_hypervolume_fraction"], x["median_front_size"], x["median_total_epochs"],
                        x["median_hypervolume_ratio"], x["median_epochs_ratio"]] for x in r["rows"]]),
            f"{r['spec']}: objectives {', '.join(f'{m} ({mode})' for m, mode in r['objectives'])}, constraints "
            f"{', '.join(r['constraints'])}; {r['trials']} trials of up to {r['max_epochs']} epochs, one at a time, "
            f"sampler {json.dumps(r['sampler'])} (seeds 0..{r['seeds'] - 1}, the same in both arms); ASHA grace "
            f"period {r['grace_period']}, reduction factor {r['reduction_factor']:g}. Hypervolume of the final Pareto "
            f"front (feasible trials that ended well, last epoch) against the reference {r['reference']} "
            f"({r['reference_note']}); ratios per seed (early stopping / none), then the median over seeds.", ""]


def mo_met(r: dict[str, Any]) -> bool | None:
    """None when a baseline sweep's front had no volume (no ratio)."""
    x = next(x for x in r["rows"] if x["name"] == MO_ASHA)
    if x["median_hypervolume_ratio"] is None:
        return None
    return x["median_hypervolume_ratio"] >= 0.95 and x["median_epochs_ratio"] <= 0.5


@ENTRIES.register("search_mo", target="MultiObjectiveASHA: hypervolume >= 0.95x at <= 0.5x the epochs of the same "
                  "sweep without early stopping (medians over seeds)", table=mo_table, met=mo_met)
def bench_search_mo(bench: Bench) -> dict[str, Any]:
    from raysweep.config.load import load_spec
    from raysweep.tracking.pareto import hypervolume, minimized

    bench.ray()
    seeds = bench.args.search_seeds
    storage = Path(scratch_dir(prefix="bench-search-mo-"))
    root = bench.tmp
    base_spec = load_spec(MO_SPEC, [f"data.train={root}/train", f"data.validation={root}/validation",
                                    f"storage_path={storage}", "budget.max_concurrent_trials=1"])
    metrics, modes = base_spec.scheduler.metrics, base_spec.scheduler.modes
    if metrics != ["val_loss", "params_count"] or modes != ["min", "min"]:
        raise RuntimeError(f"{MO_SPEC}: expected objectives val_loss, params_count (both min), got {metrics} {modes}")
    reference = [MO_CHANCE_VAL_LOSS, largest_params_count(base_spec)]
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in MO_METHODS}
    used: dict[str, Any] = {}  # each arm's scheduler section, as run
    for seed in range(seeds):
        for name, settings in MO_METHODS.items():
            bench.stage(f"{name}, seed {seed}")
            spec = load_spec(MO_SPEC, [f"data.train={root}/train", f"data.validation={root}/validation",
                                       f"storage_path={storage}", "budget.max_concurrent_trials=1",
                                       f"sampler.seed={seed}", f"seed={seed}",
                                       *[f"{k}={v}" for k, v in settings.items()]])
            used[name] = spec.scheduler
            result = sweep(spec)
            front = result.state.front()
            points = [minimized(t.final(metrics), metrics, modes) for t in front]
            trials = trials_in_order(result)
            volume = hypervolume(points, reference)
            samples[name].append({
                "seed": seed, "hypervolume": volume, "hypervolume_fraction": volume / math.prod(reference),
                "total_epochs": sum(len([r for r in t.history if "val_loss" in r]) for t in trials),
                "front": [{"params": t.params, "val_loss": p[0], "params_count": p[1], "epochs": t.epochs}
                          for t, p in zip(front, points, strict=True)],
                "feasible_trials": sum(bool(result.state.feasible(t)) for t in trials if t.state.ended_well),
                "trial_epochs": [t.epochs for t in trials], "sweep_wall_s": round(result.wall_s, 1)})
    base = {s["seed"]: s for s in samples[MO_BASELINE]}
    rows = []
    for name, v in samples.items():
        for s in v:
            b = base[s["seed"]]
            s["hypervolume_ratio"] = s["hypervolume"] / b["hypervolume"] if b["hypervolume"] else None
            s["epochs_ratio"] = s["total_epochs"] / b["total_epochs"]
        ratios = [s["hypervolume_ratio"] for s in v]
        rows.append({"name": name, "median_hypervolume": statistics.median(s["hypervolume"] for s in v),
                     "median_hypervolume_fraction": statistics.median(s["hypervolume_fraction"] for s in v),
                     "median_front_size": statistics.median(len(s["front"]) for s in v),
                     "median_total_epochs": statistics.median(s["total_epochs"] for s in v),
                     "median_hypervolume_ratio": None if None in ratios else statistics.median(ratios),
                     "median_epochs_ratio": statistics.median(s["epochs_ratio"] for s in v), "per_seed": v})
    return {"entry": "search_mo", "baseline": MO_BASELINE, "spec": MO_SPEC, "seeds": seeds,
            "objectives": [[m, mode] for m, mode in zip(metrics, modes, strict=True)],
            "constraints": list(base_spec.constraints), "reference": reference,
            "reference_note": f"val_loss {MO_CHANCE_VAL_LOSS} (chance: ln 10 = 2.303); params_count of the largest "
                              "model the space allows (highest hidden, most layers)",
            "trials": base_spec.budget.num_trials, "max_epochs": base_spec.scheduler.max_epochs,
            "schedulers": {name: scheduler.model_dump() for name, scheduler in used.items()},
            "grace_period": used[MO_ASHA].grace_period, "reduction_factor": used[MO_ASHA].reduction_factor,
            "sampler": {"type": base_spec.sampler.type,
                        **base_spec.sampler.model_dump(exclude_defaults=True, exclude={"seed"})}, "rows": rows}


# ---------------------------------------------------------------- sweep throughput and tracking cost


def throughput_table(r: dict[str, Any]) -> list[str]:
    m = r["median"]
    return [*md_table(["trials", "wall s", "ideal s", "ratio", "overhead per result s"],
                      [[r["trials"], m["wall_s"], m["ideal_s"], m["ratio"], m["overhead_per_result_s"]]]),
            f"Trials' own training time (s): {m['trial_training_s']}.", ""]


def throughput_met(r: dict[str, Any]) -> bool | None:
    """None when a trial trained for under 10 s: the target is for trials of >= 10 s."""
    if min(min(s["trial_training_s"]) for s in r["samples"]) < 10:
        return None
    return r["median"]["ratio"] <= 1.3


@ENTRIES.register("throughput", target="wall <= 1.3x ideal for trials of >= 10 s", table=throughput_table,
                  met=throughput_met)
def bench_throughput(bench: Bench, trials: int = 4) -> dict[str, Any]:
    bench.ray()
    train, validation, repeats = bench.train, bench.validation, bench.args.repeats
    tmp = Path(scratch_dir(prefix="bench-throughput-"))
    root = write_sets(tmp / "data", train, validation, tile=16)
    spec = digits_spec(root, tmp / "results", **{
        "scaling.num_workers": 1, "scheduler.type": "fifo", "scheduler.max_epochs": 8, "budget.num_trials": trials,
        "sampler.type": "random", **{f"params.{k}": v for k, v in PARAMS.items()}}, searched=("lr",))
    samples = []
    for repeat in range(repeats):
        bench.stage(f"sweep {repeat + 1} of {repeats}")
        result = sweep(spec)
        own = [training_seconds(t) for t in trials_in_order(result)]
        reports = sum(len(t.history) for t in result.state.trials.values())
        concurrent = min(2, trials)
        ideal = sum(own) / concurrent
        samples.append({"wall_s": result.wall_s, "ideal_s": ideal, "ratio": result.wall_s / ideal,
                        "trial_training_s": [round(v, 2) for v in own], "results": reports,
                        "overhead_per_result_s": (result.wall_s - ideal) * concurrent / reports})
    pick = sorted(samples, key=lambda s: s["ratio"])[len(samples) // 2]
    return {"entry": "throughput", "baseline": "ideal: sum of the trials' training time / 2 concurrent trials",
            "trials": trials, "median": pick, "samples": samples}


def tracking_table(r: dict[str, Any]) -> list[str]:
    return md_table(["trial", "training s", "cost %"], [[x["name"], x["training_s"], x["cost_pct"]] for x in r["rows"]])


@ENTRIES.register("tracking", target="MLflow logging <= 2% of training time", table=tracking_table,
                  met=lambda r: next(x["cost_pct"] for x in r["rows"] if x["name"] == "raysweep MLflow logging") <= 2)
def bench_tracking(bench: Bench) -> dict[str, Any]:
    from raysweep.tracking.store import RunStore

    bench.ray()
    train, validation, repeats = bench.train, bench.validation, max(bench.args.repeats, 3)
    tmp = Path(scratch_dir(prefix="bench-tracking-"))
    root = write_sets(tmp / "data", train, validation, tile=8)
    spec = digits_spec(root, tmp / "results", **{
        "scaling.num_workers": 1, "scheduler.type": "fifo", "scheduler.max_epochs": 10, "budget.num_trials": 1,
        **{f"params.{k}": v for k, v in PARAMS.items()}}, searched=("lr",))
    store = RunStore(f"sqlite:///{tmp / 'mlflow.db'}", "bench-tracking")
    seconds: dict[str, list[float]] = {"no tracking": [], "raysweep MLflow logging": []}
    for _ in range(repeats):
        for name, chosen in (("no tracking", None), ("raysweep MLflow logging", store)):
            bench.stage(name)
            (trial,) = sweep(spec, store=chosen).state.trials.values()
            seconds[name].append(training_seconds(trial))
    base = statistics.median(seconds["no tracking"])
    rows = [{"name": name, "training_s": statistics.median(v), "cost_pct": 100 * (statistics.median(v) / base - 1),
             "samples": [round(x, 3) for x in v]} for name, v in seconds.items()]
    return {"entry": "tracking", "baseline": "no tracking", "epochs": 10, "rows": rows}


# ---------------------------------------------------------------- column shapes (raysweep.testing.columns_bench)


ENTRIES.register("columns_memory", target="uint8 image column: host bytes/row == its Arrow bytes/row (ratio 1.0)",
                 table=columns_bench.memory_table, met=columns_bench.memory_met)(columns_bench.bench_memory)
ENTRIES.register("columns_transform", target="PNG decode epoch: transform_workers=2 >= 1.6x transform_workers=1",
                 table=columns_bench.transform_table, met=columns_bench.transform_met)(columns_bench.bench_transform)
ENTRIES.register("columns_padding", target="padded tokens + lengths >= 0.9x the hand-written pad loop's speed",
                 table=columns_bench.padding_table, met=columns_bench.padding_met)(columns_bench.bench_padding)


# ---------------------------------------------------------------- strategies (raysweep.testing.fsdp_bench)


ENTRIES.register("fsdp_step", target="raysweep's FSDP step <= 1.05x the same hand-written FSDP2 loop (2 gloo ranks)",
                 table=fsdp_bench.step_table, met=fsdp_bench.step_met, timeout_s=900)(fsdp_bench.bench_step)
ENTRIES.register("fsdp_checkpoint", target="sharded save + load <= 1.1x torch.distributed.checkpoint alone",
                 table=fsdp_bench.checkpoint_table, met=fsdp_bench.checkpoint_met)(fsdp_bench.bench_checkpoint)
ENTRIES.register("compile_tokens", target="char_gpt tokens/s with compile >= 1.0x without (CPU)",
                 table=fsdp_bench.compile_table, met=fsdp_bench.compile_met)(fsdp_bench.bench_compile)


# ---------------------------------------------------------------- main


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", default=",".join(ENTRIES), help="comma-separated entries: " + ",".join(ENTRIES))
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--ingest-gb", type=float, default=1.1)
    parser.add_argument("--quick", action="store_true",
                        help="smaller data for a smoke run (the stream entries and fingerprint)")
    parser.add_argument("--search-seeds", type=int, default=5, help="seeds per task (search) and per arm (search_mo)")
    parser.add_argument("--search-tasks", default=",".join(t.key for t in SEARCH_TASKS),
                        help="search entry: comma-separated tasks, each with its own fixed target: "
                        + ", ".join(f"{t.key} (val_loss <= {t.target_val_loss:g})" for t in SEARCH_TASKS))
    parser.add_argument("--entry-timeout", action="append", default=[], metavar="[ENTRY=]SECONDS",
                        help=f"time limit per entry: SECONDS for every entry without one of its own (default "
                        f"{DEFAULT_TIMEOUT_S:g}; dp: {ENTRIES['dp'].timeout_s:g}), ENTRY=SECONDS for one entry "
                        "(repeatable); 0: none. An entry past its limit is a failed entry (timed_out, with the "
                        "stage it was in), the processes it started are killed, and the next entry runs")
    args = parser.parse_args()
    wanted = args.only.split(",")
    unknown = ENTRIES.unknown(wanted)
    if unknown:
        parser.error(f"--only: unknown entries {unknown}; known: {', '.join(ENTRIES)}")
    unknown_tasks = sorted(set(args.search_tasks.split(",")) - {t.key for t in SEARCH_TASKS})
    if unknown_tasks:
        parser.error(f"--search-tasks: unknown tasks {unknown_tasks}; known: {', '.join(t.key for t in SEARCH_TASKS)}")
    try:
        default_limit, limits = parse_time_limits(args.entry_timeout, ENTRIES)
    except ValueError as exc:
        parser.error(f"--entry-timeout: {exc}")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    tmp = Path(scratch_dir(prefix="bench-"))
    train, validation = load_digits_sets(tmp)
    bench = Bench(args, tmp, train, validation)
    ok = run_entries(ENTRIES, wanted, bench, out=Path(args.out), header=[f"Machine: {machine}"],
                     meta={"machine": machine}, timeout_s=default_limit, timeouts=limits,
                     on_failure=bench.after_failure)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
