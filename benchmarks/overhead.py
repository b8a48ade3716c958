"""overhead: trial start to first step, raysweep sweeps against Tune trials calling a bare TorchTrainer.fit()."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import PARAMS, Bench, digits_spec, scratch_dir, sweep, trials_in_order
from benchmarks.core import md_table
from benchmarks.entries import ENTRIES
from raysweep.data.shards import train_batch_indices
from trainers import digits_mlp


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


@ENTRIES.register(
    "overhead",
    method=(
        "not interleaved pairs: medians of --repeats sweeps of each path (start-up is per trial, and a "
        "sweep's first trial differs from the later ones)"
    ), target="one-worker trial <= 0.25x bare start-up; two-worker trial's fixed cost "
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

