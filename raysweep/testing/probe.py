"""Test helpers shipped beside the engine (importable by Ray workers).

`write_probe_data` writes a small Parquet data set whose `row_id` column is also
a feature; the probe trainer (`trainer: raysweep.testing.probe`) records which rows
every rank saw, so tests can check sharding from outside the workers.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from raysweep.worker.context import TrainContext


def write_probe_data(root: Path, num_train: int = 203, num_validation: int = 61,
                     files: int = 2) -> tuple[Path, Path]:
    """A separable two-class problem in `files` Parquet files per split."""
    rng = np.random.default_rng(0)
    out = []
    offset = 0
    for split, rows in (("train", num_train), ("validation", num_validation)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for i, ids in enumerate(np.array_split(np.arange(offset, offset + rows), files)):
            x = rng.normal(size=(len(ids), 2)).astype(np.float32)
            label = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
            table = pa.table({"row_id": ids.astype(np.float32), "x0": x[:, 0], "x1": x[:, 1],
                              "label": label})
            pq.write_table(table, folder / f"part-{i}.parquet")
        offset += rows
        out.append(folder)
    return out[0], out[1]


def probe_spec(data_root: Path, storage: Path, probe_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A raw spec dict for the probe trainer (one worker, 2 epochs by default)."""
    spec: dict[str, Any] = {
        "name": "probe",
        "trainer": "raysweep.testing.probe",
        "data": {"train": str(data_root / "train"), "validation": str(data_root / "validation"),
                 "features": ["row_id", "x*"], "label": "label"},
        "params": {"batch_size": 16, "lr": 0.1, "probe_dir": str(probe_dir), "nan_epoch": -1},
        "space": {"lr": {"type": "float", "low": 0.01, "high": 0.5, "log": True}},
        "sampler": {"type": "random", "seed": 0},
        "scheduler": {"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 2},
        "budget": {"num_trials": 2},
        "scaling": {"num_workers": 1},
        "storage_path": str(storage),
    }
    for key, value in overrides.items():
        spec[key] = value
    return spec


class DropRowId(torch.nn.Module):
    """The first feature is the row id: the model does not learn from it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:]


def build_model(params: dict[str, Any]) -> torch.nn.Module:
    """Logistic regression on (x0, x1) of the (row_id, x0, x1) feature matrix: what
    `raysweep register` rebuilds."""
    return torch.nn.Sequential(DropRowId(), torch.nn.Linear(2, 2))


def _maybe_pause(ctx: TrainContext, epoch: int, probe: Path) -> None:
    """Fault-suite hook: at `params.pause_epoch`, before its `pause_step`-th batch of
    this attempt (default 1), rank 0 writes its pid to
    PROBE/pause.pid and waits (for PROBE/go, or `pause_s`) so a test can kill it.
    `pause_once` (default true): only the first time; `pause_after_done`: only once
    that many runs wrote their done-* marker (a sweep's later trial). `pause_until_drained`:
    wait for a drain notice of the worker's node instead of PROBE/go."""
    if epoch != int(ctx.params.get("pause_epoch", -1)) or ctx.rank != 0:
        return
    once = bool(ctx.params.get("pause_once", True))
    if once and (probe / "paused").exists():
        return
    if len(list(probe.glob("done-*"))) < int(ctx.params.get("pause_after_done", 0)):
        return
    (probe / "paused").touch()
    tmp = probe / f"pause.pid.{os.getpid()}"
    tmp.write_text(str(os.getpid()))
    tmp.replace(probe / "pause.pid")
    deadline = time.time() + float(ctx.params.get("pause_s", 180))
    drained = (lambda: ctx.preemption is not None and ctx.preemption() is not None) \
        if ctx.params.get("pause_until_drained") else (lambda: (probe / "go").exists())
    while time.time() < deadline and not drained():
        time.sleep(0.05)


def _run_out_of_memory() -> None:
    """Fault-suite hook (`params.fault: oom`): a real allocation failure. The address
    space is capped a little above what the process maps, then 64 GiB is asked for;
    the cap is lifted again so a reused process is unharmed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (mapped + (512 << 20), hard))
    try:
        np.ones(64 << 30, dtype=np.uint8)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def train(ctx: TrainContext) -> None:
    """Logistic regression on x0, x1; writes the row ids each rank saw per epoch."""
    torch.manual_seed(ctx.seed)
    model = build_model(ctx.params)
    ddp = ctx.prepare_model(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(ctx.params["lr"]))
    ctx.restore(model, optimizer)
    probe = Path(ctx.params["probe_dir"])
    probe.mkdir(parents=True, exist_ok=True)
    if ray.is_initialized():  # which node each rank ran on (multi-node tests)
        (probe / f"node-rank{ctx.rank}.txt").write_text(ray.get_runtime_context().get_node_id())
    # What the training process has imported (a trial's or a Train worker's: the driver's
    # libraries must not be among them), once per process.
    (probe / f"modules-rank{ctx.rank}-pid{os.getpid()}.txt").write_text("\n".join(sorted(sys.modules)))
    batch_size = int(ctx.params["batch_size"])
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(ctx.start_epoch, ctx.num_epochs):
        seen: list[np.ndarray] = []
        total, count = 0.0, 0.0
        if ctx.params.get("fault") == "oom":
            _run_out_of_memory()
        if ctx.params.get("fault") == "raise" and ctx.rank == int(ctx.params.get("fault_rank", 0)):
            raise ValueError(f"planted failure on rank {ctx.rank}")
        snapshot = lambda: ctx.state(model, optimizer)  # noqa: E731
        first = ctx.start_step if epoch == ctx.start_epoch else 0
        steps = open(probe / f"steps-rank{ctx.rank}.log", "a")  # noqa: SIM115  (closed after the epoch)
        for step, (x, y) in enumerate(ctx.train_batches(epoch, batch_size, state=snapshot), start=first):
            if len(seen) == int(ctx.params.get("pause_step", 1)):
                _maybe_pause(ctx, epoch, probe)
            seen.append(x[:, 0].numpy().astype(np.int64))
            # Every step, in order, by every attempt: what a resume must continue exactly.
            steps.write(f"{os.getpid()} {epoch} {step} {','.join(map(str, seen[-1].tolist()))}\n")
            steps.flush()
            loss = loss_fn(ddp(x), y)
            if (epoch, step) == (int(ctx.params.get("nan_loss_epoch", -1)), int(ctx.params.get("nan_loss_step", 0))) \
                    and ctx.rank == int(ctx.params.get("fault_rank", 0)):
                loss = loss * float("nan")  # (a diverged step: failure.on_nan decides what follows)
            ctx.backward(loss, optimizer)
            if torch.isfinite(loss):
                total, count = total + loss.item() * len(y), count + len(y)
        steps.close()
        np.save(probe / f"train-rank{ctx.rank}-epoch{epoch}.npy", np.concatenate(seen))
        np.save(probe / f"batches-rank{ctx.rank}-epoch{epoch}.npy", np.array([len(s) for s in seen]))
        val_ids: list[np.ndarray] = []
        val_loss, val_n = 0.0, 0.0
        with torch.no_grad():
            for x, y in ctx.validation_batches(batch_size):
                val_ids.append(x[:, 0].numpy().astype(np.int64))
                val_loss += float(torch.nn.functional.cross_entropy(model(x), y, reduction="sum"))
                val_n += len(y)
        np.save(probe / f"val-rank{ctx.rank}-epoch{epoch}.npy", np.concatenate(val_ids or [np.empty(0, np.int64)]))
        total, count, val_loss, val_n = ctx.all_reduce_sum([total, count, val_loss, val_n])
        metrics = {"epoch": epoch, "train_loss": total / count, "val_loss": val_loss / val_n}
        if epoch == int(ctx.params.get("nan_epoch", -1)) or ctx.params.get("fault") == "nan":
            metrics["val_loss"] = float("nan")
        # (`pad_checkpoint_kb`: that much more in each epoch's checkpoint, to fill a small disk)
        pad = {"pad": torch.zeros(int(ctx.params.get("pad_checkpoint_kb", 0)) * 256)} \
            if ctx.params.get("pad_checkpoint_kb") else {}
        state = {**ctx.state(model, optimizer, **pad), "epoch": epoch}
        ctx.report(metrics, checkpoint=state)
    if ctx.rank == 0:  # one line per completed run: a run that ran twice shows two
        with open(probe / f"done-{ctx.params['lr']}", "a") as handle:
            handle.write(f"{os.getpid()}\n")
