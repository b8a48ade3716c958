"""The run plan built from a spec, on the driver: which execution mode a trial takes,
how many trials fit at once, and the `RunPlan` (raysweep.worker.plan) its workers get.
Each spec section maps to one sub-plan here and nowhere else."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from raysweep.data.shards import StreamSettings
from raysweep.errors import UserInputError
from raysweep.worker.checkpoint import CheckpointSettings
from raysweep.worker.feed import FeedSettings
from raysweep.worker.parallel import ParallelSettings
from raysweep.worker.plan import DataPlan, ExecutionMode, LightningSettings, Placement, RunPlan

if TYPE_CHECKING:
    from raysweep.config.spec import BudgetSpec, ScalingSpec, Spec


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


def plan_from_spec(spec: Spec, storage_path: str, arrays: Any, mode: ExecutionMode,
                   loader: str = "memory", loader_reason: str = "") -> RunPlan:
    data, scaling, checkpoint = spec.data, spec.scaling, spec.checkpoint
    return RunPlan(
        trainer=spec.trainer, params=dict(spec.params), num_epochs=spec.scheduler.max_epochs,
        seed=spec.seed, storage_path=storage_path,
        data=DataPlan(arrays=arrays, loader=loader, loader_reason=loader_reason,
                      stream=StreamSettings(data.shuffle_window_rows, data.prefetch_windows, data.read_threads),
                      feed=FeedSettings(transform_workers=data.transform_workers, cache=data.cache,
                                        gather_threads=data.gather_threads)),
        placement=Placement(mode=mode, num_workers=scaling.num_workers, cpus_per_worker=scaling.cpus_per_worker,
                            gpus_per_worker=scaling.gpus_per_worker, accelerator_type=scaling.accelerator_type,
                            min_workers=scaling.min_workers, elastic_check_s=scaling.elastic_check_s),
        checkpoints=CheckpointSettings(every_epochs=checkpoint.every_n_epochs, every_steps=checkpoint.every_n_steps,
                                       num_to_keep=checkpoint.num_to_keep, score_metric=checkpoint.score_metric,
                                       score_mode=checkpoint.score_mode),
        parallel=parallel_settings(scaling),
        lightning=LightningSettings(spec.lightning.precision, spec.lightning.gradient_clip_val),
        deterministic=spec.deterministic, max_failures=spec.failure.max_failures, on_nan=spec.failure.on_nan,
        max_preemptions=spec.failure.max_preemptions,
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
