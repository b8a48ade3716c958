"""Running a LightningModule through a TrainContext, data-parallel on Ray Train.

The trainer module provides a `LightningModule` subclass (built as `Cls(**params)`
with the params it accepts) or a `build_module(params)` factory, written against
`lightning.pytorch` or `pytorch_lightning`. raysweep builds a Trainer of the module's
own namespace (RayDDPStrategy + RayLightningEnvironment + prepare_trainer under Ray,
of that namespace too: see lightning_compat), feeds it the context's shards and
reports every epoch through `ReportCallback`:

- metrics: whatever the module logs with `self.log(..., on_epoch=True)`, each rank's
  epoch mean combined across ranks weighted by that rank's row count, so `val_*`
  metrics are exact over the validation set (Lightning's `sync_dist` averages the
  ranks' means unweighted);
- checkpoints: Lightning's own full checkpoint (model, optimizers, loops), every
  `checkpoint.every_n_epochs`; a re-run resumes from it via `ckpt_path`, loaded
  with `weights_only=True`.

The two namespaces' classes do not mix (a `pytorch_lightning.Trainer` refuses a
`lightning.pytorch` strategy), so neither is imported up front: each piece comes from
the namespace the module's class subclasses.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from raysweep._upstream.torch_internals import lightning_checkpoint
from raysweep.data.arrays import Batch
from raysweep.errors import UserInputError
from raysweep.worker.context import TrainContext
from raysweep.worker.lightning_compat import NAMESPACES, namespace_of, ray_pieces
from raysweep.worker.plan import LightningSettings

ModuleFactory = Callable[[dict[str, Any]], Any]
"""params -> a LightningModule (of `lightning.pytorch` or `pytorch_lightning`)."""


def find_module_factory(module: ModuleType) -> ModuleFactory | None:
    """The trainer module's `build_module`, or its one LightningModule subclass."""
    factory = getattr(module, "build_module", None)
    if callable(factory):
        return factory
    classes = [
        obj for obj in vars(module).values()
        if inspect.isclass(obj) and namespace_of(obj) is not None
        and obj.__module__ == module.__name__
    ]
    if len(classes) != 1:
        return None
    cls = classes[0]

    def build(params: dict[str, Any]) -> Any:
        accepted = inspect.signature(cls.__init__).parameters
        if any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            return cls(**params)
        return cls(**{k: v for k, v in params.items() if k in accepted})

    return build


class _TrainLoader:
    """This rank's shard for the current epoch (set by ReportCallback)."""

    def __init__(self, ctx: TrainContext, batch_size: int) -> None:
        self.ctx, self.batch_size, self.epoch = ctx, batch_size, ctx.start_epoch

    def __iter__(self) -> Iterator[Batch]:
        return self.ctx.train_batches(self.epoch, self.batch_size)

    def __len__(self) -> int:
        return self.ctx.num_train_batches(self.batch_size)


class _ValidationLoader:
    def __init__(self, ctx: TrainContext, batch_size: int) -> None:
        self.ctx, self.batch_size = ctx, batch_size

    def __iter__(self) -> Iterator[Batch]:
        return self.ctx.validation_batches(self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.ctx.local_rows(train=False) / self.batch_size)


class ReportCallback:
    """Reports each epoch's metrics (exact across ranks) and checkpoints to the context.

    A Lightning Callback once combined with a namespace's `Callback` class:
    build it with `report_callback(namespace, ctx, loader)`."""

    def __init__(self, ctx: TrainContext, loader: _TrainLoader) -> None:
        self.ctx, self.loader = ctx, loader
        self._started = self._last_step = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.loader.epoch = trainer.current_epoch
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        self._last_step = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        elapsed = self._last_step - self._started  # training steps only, as the plain trainer
        metrics = self._exact_means(trainer.callback_metrics)
        train_rows, = self.ctx.all_reduce_sum([float(self.ctx.local_rows(train=True))])
        metrics.update(epoch=epoch, samples_per_s=train_rows / max(elapsed, 1e-9))
        state = None
        if self.ctx.rank == 0 and self.ctx.checkpoint_due(epoch):
            state = lightning_checkpoint(trainer)
        self.ctx.report(metrics, checkpoint=state)

    def _exact_means(self, logged: dict[str, torch.Tensor]) -> dict[str, float]:
        names = sorted(logged)
        weights = [float(self.ctx.local_rows(train=not n.startswith("val"))) for n in names]
        sums = [float(logged[n]) * w for n, w in zip(names, weights, strict=True)]
        totals = self.ctx.all_reduce_sum(sums + weights)
        return {n: totals[i] / totals[len(names) + i] for i, n in enumerate(names)}


@functools.cache
def _callback_class(namespace: str) -> type[ReportCallback]:
    base = importlib.import_module(namespace).Callback
    return type("ReportCallback", (ReportCallback, base), {"__module__": __name__, "__doc__": ReportCallback.__doc__})


def report_callback(namespace: ModuleType, ctx: TrainContext, loader: _TrainLoader) -> ReportCallback:
    """A ReportCallback that is a `namespace.Callback`."""
    return _callback_class(namespace.__name__)(ctx, loader)


def build_trainer(ctx: TrainContext, settings: LightningSettings, callback: ReportCallback,
                  namespace: ModuleType) -> Any:
    """A `namespace.Trainer` (`lightning.pytorch` or `pytorch_lightning`: the module's);
    under Ray with RayDDPStrategy and RayLightningEnvironment of that namespace."""
    common: dict[str, Any] = dict(
        max_epochs=ctx.num_epochs,
        precision=settings.precision,
        gradient_clip_val=settings.gradient_clip_val,
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        accelerator="gpu" if ctx.device.type == "cuda" else "cpu",
    )
    if not ctx.runs_on_ray:
        return namespace.Trainer(devices=1, **common)
    pieces = ray_pieces(namespace)  # (Ray Train's Lightning integration only in worker-group runs)
    trainer = namespace.Trainer(devices="auto", strategy=pieces.strategy(), plugins=[pieces.environment()], **common)
    return pieces.prepare_trainer(trainer)


def fit(ctx: TrainContext, factory: ModuleFactory, settings: LightningSettings) -> None:
    """`train(ctx)` for a LightningModule."""
    torch.manual_seed(ctx.seed)
    module = factory(ctx.params)
    namespace = _namespace(module, "")
    batch_size = int(ctx.params.get("batch_size", 64))
    loader = _TrainLoader(ctx, batch_size)
    trainer = build_trainer(ctx, settings, report_callback(namespace, ctx, loader), namespace)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_path = None
        if ctx.checkpoint is not None:
            ckpt_path = Path(tmp) / "resume.ckpt"
            torch.save(ctx.checkpoint, ckpt_path)
        trainer.fit(module, train_dataloaders=loader,
                    val_dataloaders=_ValidationLoader(ctx, batch_size=512),
                    ckpt_path=ckpt_path, weights_only=True)


def check_module(factory: ModuleFactory, params: dict[str, Any], sample: Batch,
                 settings: LightningSettings, use_gpu: bool, source: str) -> None:
    """Fail before the run: a precision the workers cannot do, a module that does not
    build, or a `training_step` that returns no loss (checked on one small batch)."""
    if settings.precision == "16-mixed" and not use_gpu:
        raise UserInputError(
            f"{source}: lightning.precision: '16-mixed' needs a GPU (scaling.gpus_per_worker > 0); "
            "on CPU use '32' or 'bf16-mixed'"
        )
    try:
        module = factory(params)
        _namespace(module, source)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log() outside a Trainer warns
            out = module.training_step(sample, 0)
    except UserInputError:
        raise
    except Exception as exc:  # the user's module failed on a real batch
        raise UserInputError(
            f"{source}: trainer: the LightningModule failed on a sample batch: {type(exc).__name__}: {exc}"
        ) from None
    loss = out.get("loss") if isinstance(out, dict) else out
    if not isinstance(loss, torch.Tensor):
        raise UserInputError(
            f"{source}: trainer: {type(module).__name__}.training_step must return the loss "
            f"(a tensor or a dict with 'loss'), got {type(out).__name__}"
        )


def _namespace(module: Any, source: str) -> ModuleType:
    """The Lightning namespace `module` (what the factory built) belongs to."""
    namespace = namespace_of(module)
    if namespace is None:
        raise UserInputError(
            f"{source + ': ' if source else ''}trainer: build_module(params) returned a {type(module).__name__}, "
            f"not a LightningModule (of {' or '.join(NAMESPACES)})")
    return namespace
