"""What a trainer gets: its data shard, `report`, the state to resume, its rank.

Trainers do not import Ray. The engine builds a `TrainContext` inside a Ray Train
worker (see `raysweep.worker`), and tests build one in-process with
`TrainContext.in_process`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from raysweep.data.arrays import ArraySet, Batch, DataSplit
from raysweep.data.columns import Block, Layout
from raysweep.data.shards import Segments, epoch_rows, num_train_batches
from raysweep.report import Report, Usage
from raysweep.worker import parallel
from raysweep.worker.batches import BatchSource, Transform, TransformError, transform_rng
from raysweep.worker.checkpoint import SHARDED, CheckpointSettings
from raysweep.worker.cursor import CURSOR, PREEMPTIONS, Checkpointer, PreemptedTooOften
from raysweep.worker.feed import FeedSettings
from raysweep.worker.parallel import ParallelSettings, Prepared
from raysweep.worker.preemption import DrainAgreement

__all__ = ["CURSOR", "PREEMPTIONS", "LossDiverged", "MissingMetricError", "NonFiniteMetricError", "PreemptedTooOften",
           "TrainContext", "TransformError", "transform_rng"]

ReportFn = Callable[[dict[str, float], "dict[str, Any] | None"], None]
PreemptionFn = Callable[[], "float | None"]
"""Returns None, or the Unix time at which this worker's node (or one of its group's)
will be taken away: a drain notice (Ray's `ray drain-node`, as a cloud autoscaler
sends for a spot node)."""
LOSS_CHECK_STEPS = 16
"""`ctx.backward` looks at whether the losses so far were finite every this many steps
(one host sync; between two looks the flag stays on the device)."""


class NonFiniteMetricError(RuntimeError):
    """A reported metric is NaN or infinite: the run stops and is marked FAILED."""


class MissingMetricError(RuntimeError):
    """The trainer's first report lacks a metric the sweep needs (an objective or a
    constrained metric): the run fails, naming it."""


class LossDiverged(Exception):
    """A non-finite loss under `failure.on_nan: stop`, raised on every rank together by
    `ctx.backward`: the entry point ends the run as an early stop (not a failure)."""

    def __init__(self, message: str, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch, self.step = epoch, step


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
    checkpoints: CheckpointSettings = field(default_factory=CheckpointSettings)
    """When `report` keeps the state (every N epochs) and the loop saves mid-epoch
    (every N steps): the spec's `checkpoint` section."""
    runs_on_ray: bool = False
    transform: Transform | None = None
    """The trainer module's `transform(batch, rng)`, run on every named batch in
    `feed.transform_workers` background threads before it reaches the device. Training
    batches get a numpy Generator seeded from (seed, epoch, step, rank); validation
    batches get rng=None (decode, do not augment)."""
    transform_name: str = "transform"
    preemption: PreemptionFn | None = None
    """Drain notices for this run's nodes (None: not watched). With a notice, the
    training loop saves a mid-epoch checkpoint at the next step and stops taking
    batches until the node is gone; the run resumes elsewhere at the next batch."""
    peer_lost: Callable[[], bool] | None = None
    """True once another rank of the run is gone (a warm group's rank 0 knows): the
    wait for the node to go ends then, rather than PREEMPTION_WAIT_MARGIN_S after the
    deadline."""
    feed: FeedSettings = field(default_factory=FeedSettings)
    """Transform threads, data.cache and the host feed's gather threads
    (raysweep.worker.feed)."""
    required_metrics: dict[str, str] = field(default_factory=dict)
    """Metrics the first report must hold, each with what needs it (`scheduler.metric`,
    a constraint); a missing one raises MissingMetricError."""
    parallel: ParallelSettings = field(default_factory=ParallelSettings)
    """scaling.strategy, precision, accumulate_steps, compile (raysweep.worker.parallel):
    applied by `prepare_model`, `autocast`, `backward`, `state` and `restore`."""
    on_nan: str = "fail"
    """failure.on_nan: what `backward` does with a non-finite loss (fail | stop | skip_batch)."""
    preempted_at: tuple[int, int] | None = field(default=None, init=False)
    """(epoch, step) of the just-in-time checkpoint a drain notice made, if any."""
    _first_step_at: float | None = field(default=None, init=False, repr=False)
    _first_step_reported: bool = field(default=False, init=False, repr=False)
    _usage: Usage = field(default_factory=Usage, init=False, repr=False)
    _prepared: Prepared | None = field(default=None, init=False, repr=False)
    _step: tuple[int, int] = field(default=(0, 1), init=False, repr=False)
    _epoch: int = field(default=0, init=False, repr=False)
    """(the batch of the epoch the trainer holds, the epoch's batch count)."""
    _step_times: list[float] = field(default_factory=list, init=False, repr=False)
    _compile_s: float | None = field(default=None, init=False, repr=False)
    _finite: torch.Tensor | None = field(default=None, init=False, repr=False)
    _finite_since: tuple[int, int] | None = field(default=None, init=False, repr=False)
    _drop_group: bool = field(default=False, init=False, repr=False)
    _done: Segments = field(default=(), init=False, repr=False)
    _batch_size: int = field(default=0, init=False, repr=False)
    """The parts of the current epoch trained at other world sizes (see Checkpointer.resume_point)."""
    _losses: list[int] = field(default_factory=lambda: [0, 0], init=False, repr=False)
    """This epoch's (backward calls, batches dropped for a non-finite loss)."""

    # -- the parts it is made of (built at first use from the fields above) ---------

    @functools.cached_property
    def source(self) -> BatchSource:
        """Where batches come from (rank, device, data.* feed settings, the transform)."""
        return BatchSource(self.rank, self.world_size, self.seed, self.device, self.feed, self.transform,
                           self.transform_name)

    @functools.cached_property
    def checkpointer(self) -> Checkpointer:
        """Where a resumed run starts; the cursor checkpoints (the spec's `checkpoint`)."""
        return Checkpointer(self.checkpoints, self.checkpoint, self.world_size)

    @functools.cached_property
    def drain(self) -> DrainAgreement:
        """Drain notices the ranks agree on (`preemption`)."""
        return DrainAgreement(self.preemption, self.world_size, self.device, self.peer_lost)

    @property
    def start_epoch(self) -> int:
        return self.checkpointer.start_epoch

    @property
    def preemptions(self) -> int:
        """Drain notices this run checkpointed for so far (earlier attempts' and this one's)."""
        return self.checkpointer.preemptions_before + (self.preempted_at is not None)

    def check_preemptions(self, limit: int) -> None:
        """failure.max_preemptions, at a run's start: past it, the run fails in one line."""
        self.checkpointer.check_preemptions(self.preemptions, limit)

    @property
    def start_step(self) -> int:
        """The batch of `start_epoch` to start at (a mid-epoch checkpoint's cursor; 0 when
        it was saved at another world size: the epoch's rest is sharded anew)."""
        return self.checkpointer.start_step

    def checkpoint_due(self, epoch: int) -> bool:
        """Whether `report` keeps a checkpoint for `epoch` (every N, and the last)."""
        return self.checkpointer.due(epoch, self.num_epochs)

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
        start, done = self.checkpointer.resume_point(batch_size) if epoch == self.start_epoch else (0, ())
        every = self.checkpoints.every_steps if state is not None else None
        total = self.num_train_batches(batch_size) if not done else \
            num_train_batches(len(epoch_rows(len(self.train), self.seed, epoch, done)), self.world_size, batch_size)
        self._done, self._batch_size = done, batch_size
        batches = self.source.train(self.train, epoch, batch_size, start, done)
        accumulate = self.parallel.accumulate_steps
        for step, batch in enumerate(batches, start=start):
            if self._first_step_at is None:
                self._first_step_at = time.time()
            self._step, self._epoch = (step, total), epoch
            if accumulate > 1 and self._prepared is not None:
                parallel.set_gradient_sync(self._prepared, self._step_ends_group(step, total))
            began = time.perf_counter()
            yield batch
            self._time_step(time.perf_counter() - began)
            if state is None or step + 1 >= total:  # (the epoch's end report follows)
                continue
            if accumulate > 1 and (step + 1) % accumulate:
                continue  # (checkpoints only between optimizer steps: no half-summed gradients)
            deadline = self.drain.deadline(step) if self.preempted_at is None else None
            if deadline is not None:
                self._save_cursor(epoch, step + 1, state, drain_deadline=deadline)
                self.preempted_at = (epoch, step + 1)
                self.drain.wait_for_node_to_go(deadline)
            elif every and (step + 1) % every == 0:
                self._save_cursor(epoch, step + 1, state)

    def _step_ends_group(self, step: int, total: int) -> bool:
        """Whether batch `step` is the last micro-batch of its accumulation group."""
        return (step + 1) % self.parallel.accumulate_steps == 0 or step + 1 >= total

    def _time_step(self, seconds: float) -> None:
        """With compile on: the first steps' times, from which `compile_s` is the first
        step's excess over the median of the next ones (the compile it waited for)."""
        if self.parallel.compile == "false" or self._compile_s is not None:
            return
        self._step_times.append(seconds)
        if len(self._step_times) >= 6:
            self._compile_s = max(0.0, self._step_times[0] - float(np.median(self._step_times[1:])))

    def _save_cursor(self, epoch: int, step: int, state: Callable[[], dict[str, Any]],
                     drain_deadline: float | None = None) -> None:
        """A mid-epoch checkpoint: the trainer's state plus the data cursor (a drain
        notice's when `drain_deadline` is set). Every rank reports (Ray Train's reports
        are collective); rank 0's checkpoint is kept."""
        preemptions = self.preemptions + (drain_deadline is not None)
        checkpoint = self.checkpointer.cursor_state(state(), epoch, step, self._batch_size, self._done, preemptions) \
            if self.rank == 0 or self._sharded else None
        self.report_fn(Report.checkpoint(epoch, step, drain_deadline).to_ray(), checkpoint)

    def validation_batches(self, batch_size: int) -> Iterator[Batch]:
        """This rank's block of the validation set; all blocks cover every row once.
        Under FSDP every rank yields as many batches (each forward gathers weights from
        all ranks): a rank with fewer ends with empty ones (0 rows)."""
        last: Batch | None = None
        count = 0
        for last in self.source.validation(self.validation, batch_size):
            count += 1
            yield last
        if not self._sharded:
            return
        most = int(self.all_reduce_max([float(count)])[0])
        if last is not None:
            for _ in range(most - count):
                yield {k: v[:0] for k, v in last.items()} if isinstance(last, dict) else tuple(v[:0] for v in last)

    def transformed(self, layout: Layout, block: Block, epoch: int | None, step: int) -> Batch:
        """`block` delivered and run through the trainer's transform (epoch None: a
        validation batch); `check` runs it on a few rows before a run."""
        return self.source.transformed(layout, block, epoch, step)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to the device and apply scaling.precision, strategy (DDP or FSDP2 when
        world_size > 1) and compile; returns the model to train.

        Build the optimizer after this (FSDP replaces the parameters with shards), and
        take and put back state with `state` and `restore`, which work for every
        strategy. `model` itself stays usable for evaluation (FSDP shards it in place).
        """
        self._prepared = parallel.prepare(model, self.parallel, self.device,
                                          self.world_size if dist.is_initialized() else 1)
        return self._prepared.model

    @property
    def compile_s(self) -> float | None:
        """With scaling.compile: how long the first step waited for the compiler (its
        time above the median of the next steps; None until measured, or compile off)."""
        return self._compile_s

    @property
    def _sharded(self) -> bool:
        return self._prepared is not None and self._prepared.sharded

    def autocast(self) -> Any:
        """A context for the forward pass: bf16 autocast for scaling.precision
        bf16-mixed (under FSDP its policy casts instead), else nothing."""
        return parallel.autocast(self.parallel, self._prepared, self.device)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
        """Backward of one micro-batch's mean loss; at the end of its accumulation group
        (scaling.accumulate_steps, or the epoch's last batch) the optimizer steps and the
        gradients are zeroed. Returns whether it stepped. The loss is divided by the
        group's size, so N micro-batches step as one N-times larger batch would."""
        step, total = self._step
        self._losses[0] += 1
        if self.on_nan == "fail":
            self._check_finite(loss, step, total)
        else:
            bad = self._non_finite_ranks(loss)
            if bad and self.on_nan == "stop":
                raise LossDiverged(f"non-finite loss at epoch {self._epoch}, batch {step} "
                                   f"(rank {', '.join(map(str, bad))}; failure.on_nan: stop)", self._epoch, step)
            if bad:  # (skip_batch: this micro-batch's whole accumulation group is dropped)
                self._drop_group, self._losses[1] = True, self._losses[1] + 1
        k = self.parallel.accumulate_steps
        group = k if (step // k + 1) * k <= total else total - (step // k) * k
        if not self._drop_group:
            (loss / group if group > 1 else loss).backward()
        if not self._step_ends_group(step, total):
            return False
        dropped, self._drop_group = self._drop_group, False
        if not dropped:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return not dropped

    def _non_finite_ranks(self, loss: torch.Tensor) -> list[int]:
        """The ranks whose loss this step is NaN or infinite (every rank gets the same
        list: one all-reduce of a flag per rank)."""
        flags = torch.zeros(self.world_size, dtype=torch.float32, device=loss.device)
        flags[self.rank] = 0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0
        if self.world_size > 1 and dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.SUM)
        return [r for r, flag in enumerate(flags.tolist()) if flag]

    def _check_finite(self, loss: torch.Tensor, step: int, total: int) -> None:
        """A NaN or infinite loss fails the run within LOSS_CHECK_STEPS steps of it (not
        at the epoch's end report), naming the epoch and the batches it was among."""
        finite = torch.isfinite(loss.detach()).all()
        self._finite = finite if self._finite is None else self._finite & finite
        epoch = self._epoch
        if self._finite_since is None:
            self._finite_since = (epoch, step)
        if (step + 1) % LOSS_CHECK_STEPS and step + 1 < total:
            return
        since, self._finite_since = self._finite_since, None
        if not bool(self._finite):
            raise NonFiniteMetricError(
                f"non-finite loss at epoch {epoch}, batches {since[1]}-{step} (rank {self.rank})")
        self._finite = None

    def state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
              **extra: Any) -> dict[str, Any]:
        """What a checkpoint holds: model and optimizer state in keys that do not depend
        on the strategy (sharded under FSDP: every rank saves its part), plus `extra`
        (the trainer's own, e.g. an RNG state; the context adds epoch or cursor)."""
        return {**parallel.state_of(self._prepared, model, optimizer), **extra}

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
        """Load the resumed checkpoint (if any) into the prepared `model` and its
        optimizer, whatever strategy and world size saved it; returns the checkpoint's
        other entries ({} without one)."""
        if self.checkpoint is None:
            return {}
        parallel.restore(self._prepared, model, optimizer, self.checkpoint)
        return {k: v for k, v in self.checkpoint.items() if k not in ("model", "optimizer", SHARDED, PREEMPTIONS)}

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sums `values` across ranks (identity for one worker)."""
        return self._all_reduce(values, dist.ReduceOp.SUM)

    def all_reduce_max(self, values: list[float]) -> list[float]:
        """Element-wise maximum of `values` across ranks (identity for one worker)."""
        return self._all_reduce(values, dist.ReduceOp.MAX)

    def _all_reduce(self, values: list[float], op: Any) -> list[float]:
        if self.world_size == 1 or not dist.is_initialized():
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=op)
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
        missing = [m for m in self.required_metrics if m not in metrics]
        if missing:
            raise MissingMetricError(
                f"{self.required_metrics[missing[0]]} names metric {missing[0]!r}, which the trainer does not report "
                f"(it reports: {', '.join(sorted(metrics))})")
        first_step = None
        if self._first_step_at is not None and not self._first_step_reported:
            # Wall-clock time of the first training step: the driver turns it
            # into the run's start-up time (trial start -> first step).
            first_step, self._first_step_reported = self._first_step_at, True
        metrics = self._loss_guard(metrics)
        keep = (self.rank == 0 or self._sharded) and self.checkpoint_due(int(metrics["epoch"]))
        if self._compile_s is not None and "compile_s" not in metrics:
            metrics = {**metrics, "compile_s": self._compile_s}
        report = Report.of_epoch(metrics, first_step, self._system_usage())
        if keep and checkpoint is not None and self.preemptions:
            checkpoint = {**checkpoint, PREEMPTIONS: self.preemptions}
        self.report_fn(report.to_ray(), checkpoint if keep else None)

    def _loss_guard(self, metrics: dict[str, float]) -> dict[str, float]:
        """failure.on_nan stop or skip_batch at an epoch's report: the trainer must have
        trained through `ctx.backward` (else the setting would do nothing, silently);
        skip_batch adds `skipped_batches` and fails an epoch whose every batch was dropped."""
        (calls, skipped), self._losses = self._losses, [0, 0]
        if self.on_nan == "fail":
            return metrics
        if calls == 0:
            raise NonFiniteMetricError(
                f"failure.on_nan: {self.on_nan} needs the trainer to call ctx.backward(loss, optimizer); "
                f"it did not in epoch {metrics['epoch']}")
        if self.on_nan != "skip_batch":
            return metrics
        if skipped >= calls:
            raise NonFiniteMetricError(f"non-finite loss in every batch of epoch {metrics['epoch']} "
                                       f"({skipped} dropped; failure.on_nan: skip_batch)")
        return {**metrics, "skipped_batches": float(skipped)}

    def _system_usage(self) -> dict[str, float]:
        """This epoch's resource use (report.Usage): the busiest rank's CPU and the largest
        peak memory across ranks (every rank reports each epoch, so all take part)."""
        usage = self._usage.read(self.device)
        names = sorted(usage)
        # (and how many ranks trained it: an elastic run's world size, epoch by epoch)
        return {**dict(zip(names, self.all_reduce_max([usage[n] for n in names]), strict=True)),
                "world_size": float(self.world_size)}

    @classmethod
    def in_process(
        cls,
        train: ArraySet,
        validation: ArraySet,
        params: dict[str, Any],
        num_epochs: int,
        seed: int = 0,
        checkpoint: dict[str, Any] | None = None,
        transform: Transform | None = None,
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
            transform=transform,
        )
        return context, reports
