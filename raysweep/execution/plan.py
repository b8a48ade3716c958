"""One run plan, and the named ways a trial executes.

`RunPlan` is everything a worker needs, as plain frozen data (no pydantic, no
Spec), built once on the driver and pickled to Tune trials and Train workers.
`ExecutionMode` names how a trial runs; `execution_mode` picks it.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raysweep.data.shards import StreamSettings
from raysweep.errors import UserInputError
from raysweep.execution.parallel import ParallelSettings

if TYPE_CHECKING:
    from raysweep.config.spec import BudgetSpec, ScalingSpec, Spec


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
    N-1 worker actors and process group for its next trial (raysweep.execution.warm_group)."""


def execution_mode(scaling: ScalingSpec, driver_resources: dict[str, float] | None = None) -> ExecutionMode:
    """In-trial for one-worker sweep trials (`scaling.worker_group: auto` or `warm`),
    a warm group for multi-worker ones with `warm`, unless the profile pins trial
    drivers to some nodes (trial_driver_resources): those may have no CPU to train on.
    Everything else runs a Train worker group."""
    if driver_resources or scaling.worker_group == "always":
        return ExecutionMode.WORKER_GROUP
    if scaling.num_workers == 1:
        return ExecutionMode.IN_TRIAL
    return ExecutionMode.WARM_GROUP if scaling.worker_group == "warm" else ExecutionMode.WORKER_GROUP


def max_concurrent_trials(scaling: ScalingSpec, budget: BudgetSpec, cpus: float, gpus: float) -> int:
    """How many trials fit on the cluster at once, each with all its workers."""
    need_cpu = scaling.num_workers * scaling.cpus_per_worker
    need_gpu = scaling.num_workers * scaling.gpus_per_worker
    fits = math.floor(cpus / need_cpu + 1e-9)
    if need_gpu:
        fits = min(fits, math.floor(gpus / need_gpu + 1e-9))
    if fits < 1:
        raise UserInputError(
            f"scaling: one trial needs {need_cpu:g} CPUs and {need_gpu:g} GPUs, "
            f"but the cluster has {cpus:g} CPUs and {gpus:g} GPUs"
        )
    return max(1, min(fits, budget.max_concurrent_trials or fits, budget.num_trials or fits))


@dataclass(frozen=True)
class LightningSettings:
    """The spec's `lightning` section, as plain data for the workers."""

    precision: str = "32"
    gradient_clip_val: float | None = None


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
    arrays: Any
    """Memory loader: ObjectRef to the (train, validation) ArraySets the driver read
    once. Stream loader: the (train, validation) StreamSources each rank reads."""
    loader: str = "memory"
    """memory | stream (see DataSpec.loader)."""
    loader_reason: str = ""
    stream: StreamSettings = StreamSettings()
    transform_workers: int = 2
    cache: str = "host"
    """data.cache (host | gpu)."""
    gather_threads: int = 4
    mode: ExecutionMode = ExecutionMode.WORKER_GROUP
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    checkpoint_every: int = 1
    checkpoint_every_steps: int | None = None
    num_to_keep: int = 2
    score_metric: str | None = None
    score_mode: str = "min"
    lightning: LightningSettings = LightningSettings()
    deterministic: bool = False
    max_failures: int = 0
    required_metrics: dict[str, str] = dataclasses.field(default_factory=dict)
    """Metrics every report must hold, each with what needs it (a sweep's: sweep_metrics)."""
    parallel: ParallelSettings = ParallelSettings()
    accelerator_type: str | None = None
    """scaling.accelerator_type: every worker asks for Ray's `accelerator_type:X` label."""

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

    def with_params(self, params: dict[str, Any]) -> RunPlan:
        return dataclasses.replace(self, params={**self.params, **params})

    @classmethod
    def from_spec(cls, spec: Spec, storage_path: str, arrays: Any, mode: ExecutionMode,
                  loader: str = "memory", loader_reason: str = "") -> RunPlan:
        data = spec.data
        return cls(
            trainer=spec.trainer, params=dict(spec.params), num_epochs=spec.scheduler.max_epochs,
            seed=spec.seed, storage_path=storage_path, arrays=arrays, mode=mode, loader=loader,
            loader_reason=loader_reason,
            stream=StreamSettings(data.shuffle_window_rows, data.prefetch_windows, data.read_threads),
            transform_workers=data.transform_workers, cache=data.cache, gather_threads=data.gather_threads,
            checkpoint_every_steps=spec.checkpoint.every_n_steps,
            num_workers=spec.scaling.num_workers, cpus_per_worker=spec.scaling.cpus_per_worker,
            gpus_per_worker=spec.scaling.gpus_per_worker, checkpoint_every=spec.checkpoint.every_n_epochs,
            num_to_keep=spec.checkpoint.num_to_keep, score_metric=spec.checkpoint.score_metric,
            score_mode=spec.checkpoint.score_mode,
            lightning=LightningSettings(spec.lightning.precision, spec.lightning.gradient_clip_val),
            deterministic=spec.deterministic, max_failures=spec.failure.max_failures,
            parallel=parallel_settings(spec.scaling), accelerator_type=spec.scaling.accelerator_type,
        )


def parallel_settings(scaling: ScalingSpec) -> ParallelSettings:
    return ParallelSettings(strategy=scaling.strategy, precision=scaling.precision,
                            accumulate_steps=scaling.accumulate_steps, compile=scaling.compile or "false",
                            shard_modules=tuple(scaling.shard_modules))


def sweep_metrics(spec: Spec) -> dict[str, str]:
    """The metrics a sweep's trials must report: its objectives and constrained metrics,
    each with what names it."""
    return {**{c.metric: f"constraint '{c}'" for c in spec.parsed_constraints()},
            **{m: "scheduler.metric" for m in spec.scheduler.metrics}}
