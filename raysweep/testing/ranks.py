"""A trainer on N torch processes with gloo, without Ray: what a Ray Train worker group
runs (a TrainContext per rank on its shard, DDP or FSDP, reports and checkpoints),
for the strategy tests and benchmarks to compare strategies, world sizes,
accumulation and compile on the same data.

Every rank writes its checkpoint files into one folder per epoch, as Ray Train merges
the ranks' uploads into one checkpoint folder; rank 0 writes its reports as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysweep.worker.parallel import ParallelSettings

TRAIN_ROWS = 1280
"""Digits rows trained on: a multiple of 64, so 1, 2 and 4 ranks of batch 64/N see the
same rows per optimizer step as one process of batch 64."""
VALIDATION_ROWS = 256


@dataclass(frozen=True)
class RankRun:
    """One run of `run_ranks`."""

    world: int
    parallel: ParallelSettings = ParallelSettings()
    params: dict[str, Any] = field(default_factory=dict)
    num_epochs: int = 2
    trainer: str = "trainers.digits_mlp"
    save_to: str | None = None
    """Folder that gets one checkpoint folder per epoch (epoch-E)."""
    resume_from: str | None = None
    """A checkpoint folder to resume from."""
    every_n_steps: int | None = None
    """checkpoint.every_n_steps: mid-epoch checkpoints (epoch-E-step-S)."""
    threads: int = 1


def digits_splits() -> tuple[Any, Any]:
    """(train, validation) ArraySets of scikit-learn's digits, scaled to [0, 1]."""
    import numpy as np
    from sklearn.datasets import load_digits

    from raysweep.data.arrays import ArraySet

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    end = TRAIN_ROWS + VALIDATION_ROWS
    train = ArraySet.from_matrix(x[:TRAIN_ROWS], y[:TRAIN_ROWS])
    return train, ArraySet.from_matrix(x[TRAIN_ROWS:end], y[TRAIN_ROWS:end])


def _rank_main(rank: int, run: RankRun, port: int, out: str) -> None:
    import importlib

    import torch
    import torch.distributed as dist

    from raysweep.report import Report
    from raysweep.worker.checkpoint import CheckpointSettings, open_state, save_state
    from raysweep.worker.context import TrainContext

    torch.set_num_threads(run.threads)
    if run.world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=run.world)
    reports: list[dict[str, float]] = []

    def report(flat: dict[str, Any], state: dict[str, Any] | None) -> None:
        got = Report.from_ray(flat)
        if state is not None and run.save_to is not None:
            name = f"epoch-{got.epoch}" + (f"-step-{got.step}" if got.mid_epoch else "")
            folder = Path(run.save_to) / name
            folder.mkdir(parents=True, exist_ok=True)
            save_state(state, folder)
        if not got.mid_epoch:
            reports.append(got.metrics)

    train, validation = digits_splits()
    ctx = TrainContext(params=run.params, num_epochs=run.num_epochs, seed=0, train=train, validation=validation,
                       report_fn=report, rank=rank, world_size=run.world, parallel=run.parallel,
                       checkpoints=CheckpointSettings(every_steps=run.every_n_steps),
                       checkpoint=open_state(run.resume_from) if run.resume_from else None)
    importlib.import_module(run.trainer).train(ctx)
    if rank == 0:  # (and how many parameter values this rank held: 1/N of them under FSDP)
        prepared = ctx._prepared
        held = sum((p.to_local() if hasattr(p, "to_local") else p).numel()
                   for p in (prepared.inner.parameters() if prepared is not None else []))
        Path(out).write_text(json.dumps([*reports, {"params_held": held}]))
    if run.world > 1:
        leave_group()


def leave_group() -> None:
    """End a spawned rank: its process group, then the process without the
    interpreter's teardown, where about 1 spawned process in 5 aborted ("terminate
    called without an active exception", a C++ thread torch left joinable) after its
    work and reports were done."""
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(run: RankRun) -> list[dict[str, float]]:
    """Run `run.trainer` on `run.world` processes; rank 0's reports (one per epoch,
    raysweep's own report keys included)."""
    import torch.multiprocessing as mp

    from raysweep.testing.helpers import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "reports.json")
        if run.world == 1:
            _rank_main(0, run, 0, out)
        else:
            mp.spawn(_rank_main, args=(run, free_port(), out), nprocs=run.world, join=True)
        reports: list[dict[str, float]] = json.loads(Path(out).read_text())
    return reports


def split_reports(reports: list[dict[str, float]]) -> tuple[list[dict[str, float]], float]:
    """(the epoch reports, the parameter values rank 0 held) of `run_ranks`' result."""
    return reports[:-1], reports[-1]["params_held"]
