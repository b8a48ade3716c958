"""One data-parallel training run on Ray Train (`raysweep train`, and each trial)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from raysweep.context import ArraySet
from raysweep.data import ResolvedData
from raysweep.spec import CheckpointSpec, LightningSpec, ScalingSpec, Spec, resolve_path
from raysweep.worker import WorkerPlan, run_worker

HEALTH_CHECK_INTERVAL_S = 0.5


@dataclass(frozen=True)
class TrainJob:
    """The parts of a spec a training run needs (picklable, sent to Tune trials)."""

    trainer: str
    data: ResolvedData
    scaling: ScalingSpec
    num_epochs: int
    seed: int
    storage_path: str
    arrays: Any
    """ObjectRef to the (train, validation) ArraySets, read once by the driver."""
    checkpoint: CheckpointSpec
    lightning: LightningSpec
    deterministic: bool = False
    max_failures: int = 0

    @classmethod
    def from_spec(cls, spec: Spec, data: ResolvedData, storage_path: str) -> TrainJob:
        """Reads the data on the driver and puts it in Ray's object store (needs ray.init)."""
        arrays = ray.put(load_arrays(data))
        return cls(spec.trainer, data, spec.scaling, spec.scheduler.max_epochs, spec.seed,
                   storage_path, arrays, spec.checkpoint, spec.lightning, spec.deterministic,
                   spec.failure.max_failures)


def load_arrays(data: ResolvedData) -> tuple[ArraySet, ArraySet]:
    """Training and validation columns, in file order, as ArraySets."""
    features = list(data.features)
    return tuple(  # type: ignore[return-value]
        ArraySet.from_parquet(list(files), features, data.label) for files in (data.train_files, data.validation_files)
    )


def storage_root(spec: Spec) -> str:
    """The experiment's run folder: an absolute local path, or the URI as given."""
    if "://" in spec.storage_path:
        return f"{spec.storage_path.rstrip('/')}/{spec.name}"
    return str(Path(resolve_path(spec.storage_path)).resolve() / spec.name)


def _worker_entry(config: dict[str, Any]) -> None:
    run_worker(config["plan"])


def worker_plan(job: TrainJob, params: dict[str, Any]) -> WorkerPlan:
    return WorkerPlan(job.trainer, params, job.num_epochs, job.seed, job.arrays,
                      job.checkpoint.every_n_epochs, job.lightning, job.scaling.use_gpu, job.deterministic)


def checkpoint_config(checkpoint: CheckpointSpec) -> CheckpointConfig:
    return CheckpointConfig(
        num_to_keep=checkpoint.num_to_keep,
        checkpoint_score_attribute=checkpoint.score_metric,
        checkpoint_score_order=checkpoint.score_mode,
    )


def build_trainer(job: TrainJob, params: dict[str, Any], run_name: str,
                  callbacks: list[Any], storage_path: str | None = None) -> TorchTrainer:
    """A TorchTrainer whose workers run `job.trainer` on the job's data.

    Re-running with the same `run_name` and storage resumes from the latest
    checkpoint (Ray Train V2 behaviour).
    """
    # Train V2's controller collects reports (and so registers checkpoints) by polling
    # its workers, every 2 s by default: a worker that dies in between loses the
    # checkpoint it had just reported. Poll more often (the controller inherits this).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(HEALTH_CHECK_INTERVAL_S))
    plan = worker_plan(job, params)
    resources = {"CPU": job.scaling.cpus_per_worker}
    if job.scaling.use_gpu:
        resources["GPU"] = job.scaling.gpus_per_worker
    return TorchTrainer(
        _worker_entry,
        train_loop_config={"plan": plan},
        scaling_config=ScalingConfig(
            num_workers=job.scaling.num_workers,
            use_gpu=job.scaling.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path or job.storage_path,
            callbacks=callbacks,
            checkpoint_config=checkpoint_config(job.checkpoint),
            failure_config=FailureConfig(max_failures=job.max_failures),
        ),
    )
