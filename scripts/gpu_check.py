"""GPU check: the raysweep trainer on one CUDA GPU against a hand-written loop.

    python scripts/gpu_check.py [--out gpu_check.json]          # one CUDA GPU, < 8 min (about 2 min on an H100)
    python scripts/gpu_check.py --device cpu --small             # the same code paths on CPU, seconds

Needs torch, numpy and pyarrow only: Ray is not on the GPU machine (its wheel is over
the machine's transfer limit), so the trainer runs through its TrainContext without
Ray, exactly as a one-worker in-trial sweep trial runs it (raysweep.worker.run_in_trial
builds the same context inside the Tune trial).

1. step: trainers.digits_mlp (bf16 autocast, `params.precision=bf16-mixed`) through
   raysweep's TrainContext against a hand-written loop over the same batches, model,
   optimizer and host-to-device path; steady-state ms/step (median of the epochs
   after the first), and achieved model FLOP/s against the chip's dense bf16 peak.
2. ingest: rows/s and GB/s that the context's shard iterator delivers into GPU
   memory, with the host gather (threads gathering into reused page-locked buffers,
   non-blocking copies) and with `data.cache: gpu` (columns resident, batches gathered
   on the GPU), against copying one pre-pinned batch over and over (the upper bound),
   against the path before the feed (take, pin, copy per batch), and against pyarrow
   iter_batches + torch.from_numpy + .to(device).

Each entry is registered with its target (benchmarks.core) and runs in a process of its
own under a time limit (benchmarks.core.run_entries); its JSON result
records "target" and "met" (None with --small: those sizes decide nothing). Writes
JSON to --out and Markdown beside it, names the targets missed, and exits 1 when any
was missed. Imports no Ray, MLflow, Optuna or pydantic (tests/integration/test_fresh_processes.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.core import Child, Registry, md_table, run_entries  # noqa: E402
from raysweep.data.arrays import ArraySet  # noqa: E402
from raysweep.data.columns import Layout  # noqa: E402
from raysweep.data.shards import train_batch_indices  # noqa: E402
from raysweep.worker.checkpoint import CheckpointSettings  # noqa: E402
from raysweep.worker.context import TrainContext  # noqa: E402
from raysweep.worker.feed import FeedSettings, to_device  # noqa: E402
from trainers import digits_mlp  # noqa: E402

ENTRIES = Registry()


@dataclass
class Check:
    """What every entry gets: the command line (sizes set) and the device."""

    args: argparse.Namespace
    device: torch.device


def make_check(args: argparse.Namespace) -> Check:
    """The context of one entry's process (benchmarks.core.Child.context)."""
    return Check(args, torch.device(args.device))


STEP_TARGET_RATIO = 1.05
INGEST_TARGET_FRACTION = 0.5  # of the pinned-copy upper bound measured in the same run
# Dense bf16 tensor-core peaks (FLOP/s), from NVIDIA's data sheets (without sparsity).
PEAKS = {"H100 SXM": 989.4e12, "H100 PCIe": 756.0e12, "H100 NVL": 835.0e12, "H200": 989.4e12, "A100": 312.0e12}


def peak_flops(name: str) -> tuple[str, float | None]:
    if "H200" in name:
        return "H200", PEAKS["H200"]
    if "H100" in name:
        kind = "H100 PCIe" if "PCIe" in name else "H100 NVL" if "NVL" in name else "H100 SXM"
        return kind, PEAKS[kind]
    if "A100" in name:
        return "A100", PEAKS["A100"]
    return name, None


def model_flops_per_row(params: dict[str, Any]) -> float:
    """Forward + backward (3x forward) matmul FLOPs of digits_mlp's MLP per row."""
    dims = [digits_mlp.NUM_FEATURES] + [int(params["hidden"])] * int(params["num_layers"]) + [digits_mlp.NUM_CLASSES]
    return 3 * 2 * sum(a * b for a, b in zip(dims, dims[1:], strict=False))


def synthetic(rows: int, seed: int = 0) -> ArraySet:
    rng = np.random.default_rng(seed)
    features = rng.random((rows, digits_mlp.NUM_FEATURES), dtype=np.float32)
    labels = (features[:, :10].argmax(axis=1)).astype(np.int64)  # learnable
    return ArraySet.from_matrix(features, labels)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_loop(train: ArraySet, params: dict[str, Any], epochs: int, device: torch.device) -> list[float]:
    """The baseline: what one writes by hand, with the same batches and copies."""
    torch.manual_seed(0)
    model = digits_mlp.build_model(params).to(device)
    optimizer = digits_mlp.build_optimizer(model, params)
    loss_fn = torch.nn.CrossEntropyLoss()
    batch_size, pin = int(params["batch_size"]), device.type == "cuda"
    seconds = []
    for epoch in range(epochs):
        sync(device)
        started = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for rows in train_batch_indices(len(train), 0, 1, batch_size, 0, epoch):
            x, y = torch.from_numpy(np.take(train.features, rows, axis=0)), torch.from_numpy(train.labels[rows])
            if pin:
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
        float(loss_sum)  # one sync per epoch, as the trainer
        seconds.append(time.perf_counter() - started)
    return seconds


def raysweep_loop(train: ArraySet, validation: ArraySet, params: dict[str, Any], epochs: int,
                  device: torch.device) -> tuple[list[float], list[dict[str, float]]]:
    reports: list[dict[str, float]] = []
    ctx = TrainContext(params=params, num_epochs=epochs, seed=0, train=train, validation=validation,
                       report_fn=lambda m, c: reports.append(m), device=device,
                       checkpoints=CheckpointSettings(every_epochs=10**6))
    digits_mlp.train(ctx)
    return [len(train) / r["samples_per_s"] for r in reports], reports


def step_table(r: dict[str, Any]) -> list[str]:
    peak = "unknown" if r["peak_bf16_tflops"] is None else f"{r['peak_bf16_tflops']:.0f} TFLOP/s"
    rows = [[x["name"], f"{x['ms_per_step']:.3f}", f"{x['ratio']:.3f}", f"{x['added_ms_per_step']:+.3f}",
             f"{x['model_tflops']:.1f}", "-" if x["mfu"] is None else f"{100 * x['mfu']:.1f}%"] for x in r["rows"]]
    return [*md_table(["path", "ms/step", "ratio", "added ms/step", "model TFLOP/s", f"MFU (dense bf16 peak {peak})"],
                      rows),
            f"{r['device']} ({r['chip']}); {r['model']}; {r['steps_per_epoch']} steps/epoch. "
            f"Trainer: {r['trainer']}", ""]


def step_met(r: dict[str, Any]) -> bool | None:
    if r["small"]:
        return None
    return next(x["ratio"] for x in r["rows"] if x["name"] == "raysweep TrainContext") <= STEP_TARGET_RATIO


@ENTRIES.register("gpu_step", target=f"raysweep TrainContext step <= {STEP_TARGET_RATIO}x the hand-written loop's",
                  table=step_table, met=step_met)
def bench_step(check: Check) -> dict[str, Any]:
    args, device = check.args, check.device
    params = {"hidden": args.hidden, "num_layers": args.layers, "batch_size": args.batch, "lr": 1e-4,
              "optimizer": "adam", "precision": "bf16-mixed"}
    train, validation = synthetic(args.rows), synthetic(args.batch * 2, seed=1)
    steps = len(train_batch_indices(len(train), 0, 1, args.batch, 0, 0))
    samples: dict[str, list[float]] = {"hand-written loop": [], "raysweep TrainContext": []}
    losses = {}
    for _ in range(args.repeats):
        samples["hand-written loop"] += hand_loop(train, params, args.epochs, device)[1:]
        seconds, reports = raysweep_loop(train, validation, params, args.epochs, device)
        samples["raysweep TrainContext"] += seconds[1:]
        losses = {"first_epoch_train_loss": reports[0]["train_loss"], "last_val_accuracy": reports[-1]["val_accuracy"]}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    chip, peak = peak_flops(name)
    per_row = model_flops_per_row(params)
    base = statistics.median(samples["hand-written loop"]) / steps
    rows = []
    for label, values in samples.items():
        step_s = statistics.median(values) / steps
        achieved = per_row * args.batch / step_s
        rows.append({"name": label, "ms_per_step": step_s * 1e3, "ratio": step_s / base,
                     "added_ms_per_step": (step_s - base) * 1e3, "model_tflops": achieved / 1e12,
                     "mfu": None if peak is None else achieved / peak})
    return {"entry": "gpu_step", "baseline": "hand-written loop", "small": args.small, "device": name, "chip": chip,
            "peak_bf16_tflops": peak and peak / 1e12,
            "model": f"MLP 64-{args.hidden}x{args.layers}-10, batch {args.batch}, bf16 autocast, Adam",
            "model_gflop_per_row": per_row / 1e9, "steps_per_epoch": steps, "rows": rows, "trainer": losses}


PYARROW_TO_DEVICE = "pyarrow iter_batches + from_numpy + .to(device) (Parquet -> GPU)"
FROM_PARQUET = "raysweep from_parquet + shard iterator (Parquet -> GPU)"
SHARD_ITERATOR = "raysweep shard iterator, host gather (in memory -> GPU)"
DEVICE_CACHE = "raysweep shard iterator, data.cache gpu (in GPU memory)"
PLAIN = "take + pin_memory + copy per batch (the path before the feed)"


def ingest_table(r: dict[str, Any]) -> list[str]:
    rows = [[x["name"], f"{x['rows_per_s']:.3g}", f"{x['gb_per_s']:.2f}", f"{x['fraction_of_upper_bound']:.3f}",
             f"{x['rate_ratio']:.2f}"] for x in r["rows"]]
    return [*md_table(["reader", "rows/s", "GB/s", "of the upper bound", "of the pyarrow rate"], rows),
            f"{r['data_rows']} rows ({r['data_gb']:.2f} GB), batch {r['batch']}, "
            f"{r.get('gather_threads', '?')} gather threads.", ""]


def ingest_met(r: dict[str, Any]) -> bool | None:
    if r["small"]:
        return None
    feeds = [x["fraction_of_upper_bound"] for x in r["rows"] if x["name"] in (SHARD_ITERATOR, DEVICE_CACHE)]
    return min(feeds) >= INGEST_TARGET_FRACTION


@ENTRIES.register("gpu_ingest", target=f"in-memory shard iterator feeds the GPU at >= {INGEST_TARGET_FRACTION}x "
                  "the pinned-copy upper bound, with host gather and with data.cache gpu",
                  table=ingest_table, met=ingest_met)
def bench_ingest(check: Check) -> dict[str, Any]:
    args, device = check.args, check.device
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = synthetic(args.ingest_rows)
    batch = args.ingest_batch
    nbytes = data.features.nbytes + data.labels.nbytes
    tmp = Path(tempfile.mkdtemp(prefix="gpu-ingest-"))
    path = tmp / "part-0.parquet"
    columns = {f"px_{i}": data.features[:, i] for i in range(data.features.shape[1])}
    pq.write_table(pa.table({**columns, "label": data.labels}), path, compression="none", use_dictionary=False)
    names = list(columns)
    pin = device.type == "cuda"

    def raysweep_iter(cache: str = "host") -> int:
        ctx, _ = TrainContext.in_process(data, data, {}, num_epochs=1)
        ctx.device = device  # (feed on_cpu: on --device cpu, the same feed code, with a clone for the copy)
        ctx.feed = FeedSettings(cache=cache, gather_threads=args.gather_threads, on_cpu=True)
        count = 0
        for x, y in ctx.train_batches(0, batch):
            count += min(len(x), len(y))
        sync(device)
        return count

    def device_cache() -> int:
        return raysweep_iter("gpu")

    def plain() -> int:
        count = 0
        for x, y in data.train_batches(0, 1, batch, 0, 0):
            x, y = to_device((x, y), device)
            count += min(len(x), len(y))
        sync(device)
        return count

    def pre_pinned() -> int:
        x, y = torch.from_numpy(data.features[:batch].copy()), torch.from_numpy(data.labels[:batch].copy())
        if pin:
            x, y = x.pin_memory(), y.pin_memory()
        count = 0
        while count < len(data):
            gx, gy = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
            count += min(len(gx), len(gy))
        sync(device)
        return count

    def pyarrow_iter() -> int:
        count = 0
        for b in pq.ParquetFile(path).iter_batches(batch_size=batch, columns=[*names, "label"]):
            x = torch.from_numpy(np.stack([b.column(i).to_numpy() for i in range(len(names))], axis=1))
            y = torch.from_numpy(b.column(len(names)).to_numpy())
            x, y = x.to(device), y.to(device)
            count += len(y)
        sync(device)
        return count

    def raysweep_from_parquet() -> int:
        loaded = ArraySet.from_parquet([str(path)], Layout.scalars(names, "label", data.labels.dtype))
        ctx, _ = TrainContext.in_process(loaded, loaded, {}, num_epochs=1)
        ctx.device = device
        count = sum(len(y) for _, y in ctx.train_batches(0, batch))
        sync(device)
        return count

    readers = {"one pre-pinned batch copied (upper bound)": pre_pinned,
               SHARD_ITERATOR: raysweep_iter, DEVICE_CACHE: device_cache, PLAIN: plain,
               PYARROW_TO_DEVICE: pyarrow_iter, FROM_PARQUET: raysweep_from_parquet}
    seconds: dict[str, list[float]] = {k: [] for k in readers}
    for reader in readers.values():  # (a first pass: CUDA context, host allocator and cache warm)
        reader()
    for _ in range(args.repeats):
        for label, reader in readers.items():
            started = time.perf_counter()
            assert reader() >= len(data) - batch
            seconds[label].append(time.perf_counter() - started)
    upper = statistics.median(seconds["one pre-pinned batch copied (upper bound)"])
    pyarrow = statistics.median(seconds[PYARROW_TO_DEVICE])
    rows = [{"name": k, "rows_per_s": len(data) / statistics.median(v), "gb_per_s": nbytes / statistics.median(v) / 1e9,
             "fraction_of_upper_bound": upper / statistics.median(v), "rate_ratio": pyarrow / statistics.median(v)}
            for k, v in seconds.items()]
    return {"entry": "gpu_ingest", "baseline": PYARROW_TO_DEVICE, "small": args.small, "rows": rows,
            "data_rows": len(data), "data_gb": nbytes / 1e9, "batch": batch, "gather_threads": args.gather_threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny sizes (to try the script on CPU)")
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--gather-threads", type=int, default=4, help="data.gather_threads of the host feed")
    parser.add_argument("--only", default=",".join(ENTRIES), help="comma-separated entries: " + ",".join(ENTRIES))
    args = parser.parse_args()
    wanted = args.only.split(",")
    unknown = ENTRIES.unknown(wanted)
    if unknown:
        parser.error(f"--only: unknown entries {unknown}; known: {', '.join(ENTRIES)}")
    big = not args.small
    args.hidden, args.layers, args.batch = (8192, 3, 4096) if big else (64, 2, 64)
    args.rows, args.epochs = (262144, 4) if big else (2048, 3)
    args.ingest_rows, args.ingest_batch = (4_000_000, 4096) if big else (20000, 256)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing measured (run with --device cpu --small to try the code paths)")
        sys.exit(1)
    torch.device(args.device)  # (a bad --device fails here, before any entry)
    # (find_spec, not import: this check must not load Ray even where it is installed)
    if importlib.util.find_spec("ray") is not None:
        ray_note = "Ray is installed here, but this check runs the trainer through its context without Ray"
    else:
        ray_note = "Ray is not installed on this machine: the trainer ran through its TrainContext without Ray"
    meta = {"torch": torch.__version__, "ray": ray_note, "cpus": os.cpu_count(), "device": args.device,
            "small": args.small}
    header = [f"Device: {args.device}{' (--small)' if args.small else ''}; torch {torch.__version__}; "
              f"{os.cpu_count()} CPUs; {ray_note}"]
    started = time.perf_counter()
    child = Child(f"{__file__}:ENTRIES", f"{__file__}:make_check", vars(args))
    ok = run_entries(ENTRIES, wanted, child, out=Path(args.out), header=header, meta=meta)
    print(f"wall: {time.perf_counter() - started:.0f} s; JSON: {args.out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
