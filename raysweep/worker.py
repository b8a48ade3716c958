"""The code every Ray Train worker runs: build a TrainContext, call the trainer."""

from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from typing import Any

from raysweep.checkpoint import load_state, save_state
from raysweep.context import TrainContext


@dataclass(frozen=True)
class WorkerPlan:
    """What a worker needs, and nothing else (picklable, no Spec)."""

    trainer: str
    params: dict[str, Any]
    num_epochs: int
    seed: int
    arrays: Any
    """ObjectRef to the (train, validation) ArraySets the driver read once."""


def _report_to_ray(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
    import ray.train

    if state is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_state(state, tmp)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _resume_state() -> dict[str, Any] | None:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return load_state(directory)


def run_worker(plan: WorkerPlan) -> None:
    """`train_loop_per_worker` for TorchTrainer."""
    import ray
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    trainer = importlib.import_module(plan.trainer)
    train, validation = ray.get(plan.arrays)
    ctx = TrainContext(
        params=plan.params,
        num_epochs=plan.num_epochs,
        seed=plan.seed,
        train=train,
        validation=validation,
        report_fn=_report_to_ray,
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        device=ray.train.torch.get_device(),
        checkpoint=_resume_state(),
    )
    trainer.train(ctx)
