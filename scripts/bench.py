"""Benchmarks, each side by side with its baseline in one process, alternating.

    .venv/bin/python scripts/bench.py [--repeats 3] [--only step,overhead] [--out bench.json]

Entries (medians over repeats; each names its baseline):
- step: steady-state time per training step of the raysweep plain trainer and of
  the Lightning path, against a hand-written PyTorch loop on the same model, data,
  batch order and thread count (in-process, no Ray).
- overhead: a 1-epoch run through raysweep's TorchTrainer (driver start to first
  training step, and total), against a bare Ray Train V2 TorchTrainer.fit() whose
  loop does the same work on the same data, for 1 and 2 workers.
Prints a Markdown table and writes JSON to --out.
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

from raysweep.context import ArraySet, TrainContext
from raysweep.data import train_batch_indices
from raysweep.examples import write_digits_parquet
from raysweep.lightning import find_module_factory, fit
from raysweep.spec import LightningSpec
from trainers import digits_mlp, digits_mlp_lightning

PARAMS = {"batch_size": 64, "hidden": 512, "num_layers": 2, "lr": 0.01, "optimizer": "adam"}
EPOCHS = 3  # the first epoch is warm-up; steady state is the median of the rest


def load_digits_sets(root: Path) -> tuple[ArraySet, ArraySet]:
    from raysweep.data import read_parquet_columns

    write_digits_parquet(root)
    features = [f"px_{i}" for i in range(64)]
    sets = []
    for split in ("train", "validation"):
        columns = read_parquet_columns([str(root / split / "part-0.parquet")], [*features, "label"])
        sets.append(ArraySet.from_columns(columns, features, "label"))
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


def bench_overhead(data_root: Path, repeats: int) -> dict[str, Any]:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysweep.cluster import connect
    from raysweep.data import resolve_data
    from raysweep.profile import ClusterProfile
    from raysweep.spec import load_spec
    from raysweep.training import TrainJob, build_trainer

    connect(ClusterProfile(name="bench", num_cpus=2))
    spec = load_spec("search_spaces/digits_mlp.yaml", [
        f"data.train={data_root}/train", f"data.validation={data_root}/validation",
        "scheduler.max_epochs=1", "scheduler.grace_period=1"])
    data = resolve_data(spec.data, "search_spaces/digits_mlp.yaml")
    storage = tempfile.mkdtemp(prefix="bench-")
    job = TrainJob.from_spec(spec, data, storage)
    rows = []
    for workers in (1, 2):
        scaled = TrainJob(**{**job.__dict__, "scaling": spec.scaling.model_copy(update={"num_workers": workers})})
        samples: dict[str, list[tuple[float, float]]] = {"bare TorchTrainer.fit": [], "raysweep": []}
        for i in range(repeats):
            started = time.time()
            result = TorchTrainer(
                bare_loop, train_loop_config={"arrays": job.arrays},
                scaling_config=ScalingConfig(num_workers=workers),
                run_config=RunConfig(name=f"bare-{workers}-{i}", storage_path=storage),
            ).fit()
            samples["bare TorchTrainer.fit"].append(
                (result.metrics["first_step_unix"] - started, time.time() - started))
            started = time.time()
            result = build_trainer(scaled, {**spec.params, **PARAMS}, f"rs-{workers}-{i}", callbacks=[]).fit()
            samples["raysweep"].append((result.metrics["first_step_unix"] - started, time.time() - started))
        base = statistics.median(s for s, _ in samples["bare TorchTrainer.fit"])
        for name, values in samples.items():
            startup = statistics.median(s for s, _ in values)
            total = statistics.median(t for _, t in values)
            rows.append({"name": f"{name}, {workers} worker(s)", "startup_s": startup, "total_s": total,
                         "startup_ratio": startup / base})
    ray.shutdown()
    return {"entry": "overhead", "baseline": "bare TorchTrainer.fit", "rows": rows}


def markdown(results: list[dict[str, Any]], machine: str) -> str:
    lines = [f"Machine: {machine}", ""]
    for result in results:
        if result["entry"] == "step":
            lines += [f"**Training step** ({result['model']}, {result['threads']} threads; "
                      f"baseline: {result['baseline']})", "",
                      "| path | ms/step | ratio | added ms/step |", "|---|---|---|---|"]
            lines += [f"| {r['name']} | {r['ms_per_step']:.3f} | {r['ratio']:.3f} | {r['added_ms_per_step']:+.3f} |"
                      for r in result["rows"]]
            lines += ["", f"Plain trainer losses equal the hand-written loop's to 5 decimals: "
                          f"{result['plain_losses_equal_to_5_decimals']}", ""]
        else:
            lines += [f"**Run start-up** (driver start to first training step; baseline: {result['baseline']})", "",
                      "| run | start-up s | total s | start-up ratio |", "|---|---|---|---|"]
            lines += [f"| {r['name']} | {r['startup_s']:.2f} | {r['total_s']:.2f} | {r['startup_ratio']:.2f} |"
                      for r in result["rows"]]
            lines += [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="step,overhead")
    parser.add_argument("--out", default="bench.json")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        train, validation = load_digits_sets(Path(tmp))
        if "step" in wanted:
            results.append(bench_step(train, validation, args.repeats))
        if "overhead" in wanted:
            results.append(bench_overhead(Path(tmp), args.repeats))
    Path(args.out).write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    print(markdown(results, machine))


if __name__ == "__main__":
    main()
