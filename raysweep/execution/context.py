"""What a trainer gets: its data shard, `report`, the state to resume, its rank.

Trainers do not import Ray. The engine builds a `TrainContext` inside a Ray Train
worker (see `raysweep.worker`), and tests build one in-process with
`TrainContext.in_process`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from raysweep.data.arrays import ArraySet, Batch, DataSplit
from raysweep.data.shards import num_train_batches

CURSOR = "cursor"
"""Key of the data cursor {epoch, step} in a mid-epoch checkpoint's state."""
MID_EPOCH = "mid_epoch"
"""Marks a mid-epoch report: no epoch metrics, only its checkpoint (the tracker,
MLflow and the scheduler skip it). Same string as raysweep.tracking.store.MID_EPOCH."""
ReportFn = Callable[[dict[str, float], "dict[str, Any] | None"], None]


class NonFiniteMetricError(RuntimeError):
    """A reported metric is NaN or infinite: the run stops and is marked FAILED."""


@dataclass
class TrainContext:
    """Everything one worker's training code may use.

    Attributes:
        params: fixed params merged with this trial's sampled ones.
        num_epochs: epochs to train (the scheduler may stop the run earlier).
        start_epoch: first epoch to run (0, the one after a resumed epoch-end
            checkpoint, or the one a mid-epoch checkpoint was taken in).
        checkpoint: the state dict a previous `report` (or mid-epoch save) held, or None.
        train, validation: the splits (memory or stream loader; see DataSplit).
    """

    params: dict[str, Any]
    num_epochs: int
    seed: int
    train: DataSplit
    validation: DataSplit
    report_fn: ReportFn
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: dict[str, Any] | None = None
    checkpoint_every: int = 1
    checkpoint_every_steps: int | None = None
    runs_on_ray: bool = False
    _first_step_at: float | None = field(default=None, init=False, repr=False)
    _first_step_reported: bool = field(default=False, init=False, repr=False)

    @property
    def start_epoch(self) -> int:
        if self.checkpoint is None:
            return 0
        if CURSOR in self.checkpoint:
            return int(self.checkpoint[CURSOR]["epoch"])
        return int(self.checkpoint["epoch"]) + 1

    @property
    def start_step(self) -> int:
        """The batch of `start_epoch` to start at (a mid-epoch checkpoint's cursor)."""
        return int(self.checkpoint[CURSOR]["step"]) if self.checkpoint and CURSOR in self.checkpoint else 0

    def checkpoint_due(self, epoch: int) -> bool:
        """Whether `report` keeps a checkpoint for `epoch` (every N, and the last)."""
        return (epoch + 1) % self.checkpoint_every == 0 or epoch + 1 >= self.num_epochs

    def num_train_batches(self, batch_size: int) -> int:
        return num_train_batches(len(self.train), self.world_size, batch_size)

    def local_rows(self, train: bool = True) -> int:
        """Rows this rank gets per epoch (train) or per evaluation (validation)."""
        split = self.train if train else self.validation
        return split.local_rows(self.rank, self.world_size, train)

    def train_batches(self, epoch: int, batch_size: int,
                      state: Callable[[], dict[str, Any]] | None = None) -> Iterator[Batch]:
        """This rank's shard for `epoch`: seeded shuffle, same batch count on every rank.

        A resumed run starts `start_epoch` at the checkpoint's cursor. With
        `checkpoint.every_n_steps` set, pass `state` (what `report`'s checkpoint
        would hold, as a function): after every N-th step the context saves it with
        the cursor, on every rank together, so a resume continues at the next batch.
        """
        start = self.start_step if epoch == self.start_epoch else 0
        every = self.checkpoint_every_steps if state is not None else None
        total = self.num_train_batches(batch_size)
        batches = self.train.train_batches(self.rank, self.world_size, batch_size, self.seed, epoch, start)
        for step, batch in enumerate(batches, start=start):
            if self._first_step_at is None:
                self._first_step_at = time.time()
            yield self._to_device(batch)
            if every and (step + 1) % every == 0 and step + 1 < total:
                assert state is not None
                self._save_cursor(epoch, step + 1, state)

    def _save_cursor(self, epoch: int, step: int, state: Callable[[], dict[str, Any]]) -> None:
        """A mid-epoch checkpoint: the trainer's state plus the data cursor. Every rank
        reports (Ray Train's reports are collective); rank 0's checkpoint is kept."""
        checkpoint = {**state(), CURSOR: {"epoch": epoch, "step": step}} if self.rank == 0 else None
        self.report_fn({"epoch": epoch, "step": step, MID_EPOCH: 1, "report_unix": time.time()}, checkpoint)

    def validation_batches(self, batch_size: int) -> Iterator[Batch]:
        """This rank's block of the validation set; all blocks cover every row once."""
        for batch in self.validation.eval_batches(self.rank, self.world_size, batch_size):
            yield self._to_device(batch)

    def _to_device(self, batch: Batch) -> Batch:
        if self.device.type != "cuda":
            return batch[0].to(self.device), batch[1].to(self.device)
        # Pinned staging + non-blocking copies: the host prepares the next batch while
        # the GPU still works on this one (a pageable copy would wait for the GPU).
        return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in batch)  # type: ignore[return-value]

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to the device; wrap in DistributedDataParallel when world_size > 1."""
        model = model.to(self.device)
        if self.world_size > 1 and dist.is_initialized():
            ids = [self.device.index] if self.device.type == "cuda" else None
            return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sums `values` across ranks (identity for one worker)."""
        if self.world_size == 1 or not dist.is_initialized():
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def report(self, metrics: dict[str, float], checkpoint: dict[str, Any] | None = None) -> None:
        """Report one epoch's metrics (rank 0's travel up) and optionally its state.

        `metrics` must hold the 0-based `epoch`; `epochs_completed` is added.

        Every rank must call it once per epoch. A NaN or infinite metric raises
        NonFiniteMetricError, which fails the run.
        """
        if "epoch" not in metrics:
            raise ValueError("report() needs metrics['epoch'] (0-based)")
        bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
        if bad:
            raise NonFiniteMetricError(f"non-finite metric(s) {bad} at epoch {metrics['epoch']}")
        # The scheduler's clock: ASHA's grace period counts completed epochs.
        metrics = {**metrics, "epochs_completed": int(metrics["epoch"]) + 1, "report_unix": time.time()}
        if self._first_step_at is not None and not self._first_step_reported:
            # Wall-clock time of the first training step: the driver turns it
            # into the run's start-up time (trial start -> first step).
            metrics["first_step_unix"] = self._first_step_at
            self._first_step_reported = True
        keep = self.rank == 0 and self.checkpoint_due(int(metrics["epoch"]))
        self.report_fn(metrics, checkpoint if keep else None)

    @classmethod
    def in_process(
        cls,
        train: ArraySet,
        validation: ArraySet,
        params: dict[str, Any],
        num_epochs: int,
        seed: int = 0,
        checkpoint: dict[str, Any] | None = None,
    ) -> tuple[TrainContext, list[tuple[dict[str, float], dict[str, Any] | None]]]:
        """A one-worker context without Ray; returns it and the list `report` fills."""
        reports: list[tuple[dict[str, float], dict[str, Any] | None]] = []
        context = cls(
            params=params,
            num_epochs=num_epochs,
            seed=seed,
            train=train,
            validation=validation,
            report_fn=lambda m, c: reports.append((m, c)),
            checkpoint=checkpoint,
        )
        return context, reports
