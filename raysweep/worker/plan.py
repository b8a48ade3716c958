"""One run plan, and the named ways a trial executes.

`RunPlan` is everything a worker needs, as plain frozen data (no pydantic, no
Spec), built once on the driver (`raysweep.driver.plan.plan_from_spec`) and pickled
to Tune trials and Train workers. It is made of sub-plans, each handed whole to the
part that uses it: `DataPlan` (its `FeedSettings` to the trainer's context),
`Placement` (to whatever places workers), `CheckpointSettings` (to the context and to
Tune/Train's checkpoint config), `ParallelSettings` (to the context). A new option
touches the spec, the builder and the one sub-plan and part that use it.
`ExecutionMode` names how a trial runs (`raysweep.driver.plan.execution_mode` picks it).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from raysweep.data.shards import StreamSettings
from raysweep.worker.checkpoint import CheckpointSettings
from raysweep.worker.feed import FeedSettings
from raysweep.worker.parallel import ParallelSettings

ACCELERATOR_SLIVER = 0.001
"""How much of a node's `accelerator_type:X` resource (1 per node) a worker asks for:
enough to land only on such nodes, small enough never to limit how many fit."""


class ExecutionMode(enum.Enum):
    """How one trial (or `raysweep train` run) executes."""

    IN_TRIAL = "in-trial process"
    """One worker trains in its Tune trial's own, reused process: no Train worker group."""
    WORKER_GROUP = "Train worker group"
    """A Ray Train TorchTrainer: N workers, DDP (gloo on CPU, nccl on GPU)."""
    WARM_GROUP = "warm worker group"
    """N workers, DDP: the Tune trial's own (reused) process is rank 0 and keeps its
    N-1 worker actors and process group for its next trial (raysweep.worker.warm_group)."""


@dataclass(frozen=True)
class LightningSettings:
    """The spec's `lightning` section, as plain data for the workers."""

    precision: str = "32"
    gradient_clip_val: float | None = None


@dataclass(frozen=True)
class DataPlan:
    """Where a run's rows come from and how they reach the trainer (the spec's `data`)."""

    arrays: Any
    """Memory loader: ObjectRef to the (train, validation) ArraySets the driver read
    once. Stream loader: the (train, validation) StreamSources each rank reads."""
    loader: str = "memory"
    """memory | stream (see DataSpec.loader)."""
    loader_reason: str = ""
    stream: StreamSettings = StreamSettings()
    feed: FeedSettings = FeedSettings()
    """Transform threads, data.cache and the host feed's gather threads (the context's)."""


@dataclass(frozen=True)
class Placement:
    """Where and how many workers a run (or trial) asks for (the spec's `scaling`)."""

    mode: ExecutionMode = ExecutionMode.WORKER_GROUP
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    accelerator_type: str | None = None
    """scaling.accelerator_type: every worker asks for Ray's `accelerator_type:X` label."""
    min_workers: int | None = None
    """scaling.min_workers: an elastic worker group (Train resizes it between this and num_workers)."""
    elastic_check_s: float = 60.0

    @property
    def elastic(self) -> bool:
        return self.min_workers is not None and self.min_workers < self.num_workers

    def worker_resources(self) -> dict[str, float]:
        """What one worker reserves: its CPUs, GPUs and (with accelerator_type) a sliver
        of the GPU-type label, which only nodes with that GPU offer."""
        resources = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            resources["GPU"] = self.gpus_per_worker
        if self.accelerator_type:
            resources[f"accelerator_type:{self.accelerator_type}"] = ACCELERATOR_SLIVER
        return resources

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


@dataclass(frozen=True)
class RunPlan:
    """What a run's workers need, and nothing else (picklable)."""

    trainer: str
    params: dict[str, Any]
    """Fixed params; a trial's sampled params are merged in by `with_params`."""
    num_epochs: int
    seed: int
    storage_path: str
    """The experiment's run folder (local path or URI)."""
    data: DataPlan
    placement: Placement = Placement()
    checkpoints: CheckpointSettings = CheckpointSettings()
    parallel: ParallelSettings = ParallelSettings()
    lightning: LightningSettings = LightningSettings()
    deterministic: bool = False
    max_failures: int = 0
    on_nan: str = "fail"
    max_preemptions: int = 10
    """failure.on_nan (the trainer's context's `backward`)."""
    required_metrics: dict[str, str] = dataclasses.field(default_factory=dict)
    """Metrics every report must hold, each with what needs it (a sweep's:
    raysweep.driver.plan.sweep_metrics)."""

    def with_params(self, params: dict[str, Any]) -> RunPlan:
        return dataclasses.replace(self, params={**self.params, **params})
