"""Worker side: what runs in a Ray Train worker or an in-trial process.

Builds the trainer's `TrainContext` from a `RunPlan` and calls the trainer. One
entry point per execution mode; both report and resume the same way.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import ray
import torch

from raysweep._ray_compat import set_deterministic_cublas
from raysweep._upstream.train import train_drain_deadline
from raysweep.data.arrays import DataSplit
from raysweep.data.storage import use_patient_io
from raysweep.data.stream import StreamSplit
from raysweep.errors import note_cause
from raysweep.report import Report
from raysweep.worker.checkpoint import is_sharded, load_state, open_state, save_state
from raysweep.worker.context import LossDiverged, TrainContext
from raysweep.worker.drain import NodeDrainWatch
from raysweep.worker.plan import LightningSettings, RunPlan


def use_deterministic_algorithms(on: bool) -> None:
    """What `deterministic: true` in the spec turns on, in each worker before training."""
    if not on:
        return
    set_deterministic_cublas()
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def resolve_train_fn(module_name: str, lightning: LightningSettings) -> Callable[[TrainContext], None] | None:
    """The trainer module's `train(ctx)`, or a Lightning runner for its module; None if neither."""
    module = importlib.import_module(module_name)
    train = getattr(module, "train", None)
    if callable(train):
        return train
    # (lazy: Lightning is imported only by workers that run a LightningModule)
    from raysweep.worker.lightning import find_module_factory, fit

    factory = find_module_factory(module)
    return None if factory is None else functools.partial(fit, factory=factory, settings=lightning)


def _report(report: Callable[..., None], checkpoint_type: Any, metrics: dict[str, float],
            state: dict[str, Any] | None) -> None:
    """`ctx.report` on Ray: `report` is ray.train.report or ray.tune.report."""
    if state is None:
        report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_state(state, tmp)
        report(metrics, checkpoint=checkpoint_type.from_directory(tmp))


def stored_checkpoint(uri: str | None) -> Any:
    """A Ray checkpoint for a folder in the run's storage (local, s3:// or gs://), or None."""
    if not uri:
        return None
    from ray import tune

    from raysweep.data.storage import filesystem

    fs, path = filesystem(uri)
    return tune.Checkpoint(path, filesystem=fs)


def _state_of(checkpoint: Any) -> dict[str, Any] | None:
    """The state a Ray checkpoint holds (None: start from scratch). A sharded one is
    copied to a local folder this process keeps until it exits: the trainer reads its
    shards later, in `ctx.restore`."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        if not is_sharded(directory):
            return load_state(directory)
        local = tempfile.mkdtemp(prefix="raysweep-shards-")
        atexit.register(shutil.rmtree, local, ignore_errors=True)
        shutil.copytree(directory, local, dirs_exist_ok=True)
    return open_state(local)


def splits(plan: RunPlan) -> tuple[DataSplit, DataSplit]:
    """The plan's train and validation splits: mapped from the object store (memory
    loader) or read by this rank straight from storage (stream loader)."""
    data = plan.data
    if data.loader == "stream":
        return StreamSplit(data.arrays[0], data.stream), StreamSplit(data.arrays[1], data.stream)
    train, validation = ray.get(data.arrays)
    return train, validation


def _train(plan: RunPlan, report_fn: Any, checkpoint: dict[str, Any] | None, **placement: Any) -> None:
    """Build this process's TrainContext and run the trainer."""
    use_patient_io()  # (a stream loader's reads: a storage blip is retried, not fatal)
    train_fn = resolve_train_fn(plan.trainer, plan.lightning)
    assert train_fn is not None, f"{plan.trainer} was checked on the driver"
    use_deterministic_algorithms(plan.deterministic)
    train, validation = splits(plan)
    transform = getattr(importlib.import_module(plan.trainer), "transform", None)
    ctx = TrainContext(params=plan.params, num_epochs=plan.num_epochs, seed=plan.seed, train=train,
                       validation=validation, report_fn=report_fn, checkpoint=checkpoint,
                       checkpoints=plan.checkpoints, transform=transform, transform_name=f"{plan.trainer}.transform",
                       feed=plan.data.feed, required_metrics=plan.required_metrics, parallel=plan.parallel,
                       on_nan=plan.on_nan, **placement)
    try:
        ctx.check_preemptions(plan.max_preemptions)
        train_fn(ctx)
    except LossDiverged as stop:  # (every rank together: the run ends as an early stop, with why)
        report_fn(Report.stopped(stop.epoch, stop.step, str(stop)).to_ray(), None)
    except Exception as exc:  # (re-raised as it was, with its Cause attached for the driver)
        note_cause(exc, ctx.rank, ctx.world_size, plan.trainer)
        raise


def train_in_trial(plan: RunPlan, resume_from: str | None = None) -> None:
    """ExecutionMode.IN_TRIAL: train in the Tune trial's own process.

    Reports and checkpoints go straight to Tune (`tune.report`), and a restored or
    retried trial resumes from `tune.get_checkpoint()`, so checkpointing, resume and
    failure handling stay Tune's. Ray gives the trial's actor its CPUs (and thread
    count) and GPU, as it would a Train worker. A drain notice for its node is watched
    (raysweep.worker.drain): the run checkpoints at once and waits for the node to
    go; Tune runs it again elsewhere without counting a failure. `resume_from`: the
    checkpoint a resumed sweep continues this trial from, when Tune has none of its own.
    """
    from ray import tune  # (lazy: Train workers never load Tune)

    use_cuda = plan.placement.use_gpu and torch.cuda.is_available()
    with NodeDrainWatch(ray.get_runtime_context().get_node_id()) as drain:
        checkpoint = tune.get_checkpoint() or stored_checkpoint(resume_from)
        _train(plan, functools.partial(_report, tune.report, tune.Checkpoint), _state_of(checkpoint),
               device=torch.device("cuda", 0) if use_cuda else torch.device("cpu"), preemption=drain.deadline)


def train_in_worker_group(config: dict[str, Any]) -> None:
    """ExecutionMode.WORKER_GROUP: `train_loop_per_worker` of the TorchTrainer."""
    import ray.train  # (lazy: in-trial processes never load Train)
    import ray.train.torch

    plan: RunPlan = config["plan"]
    context = ray.train.get_context()
    report = functools.partial(_report, ray.train.report, ray.train.Checkpoint)
    _train(plan, report, _state_of(ray.train.get_checkpoint()), rank=context.get_world_rank(),
           world_size=context.get_world_size(), device=ray.train.torch.get_device(), runs_on_ray=True,
           preemption=train_drain_deadline)
