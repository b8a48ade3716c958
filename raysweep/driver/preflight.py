"""Driver side, before anything starts: the trainer module imports and can train.

A plain trainer defines `train(ctx)`; a Lightning trainer's module is built and its
`training_step` run on a few real rows, so a broken module fails `raysweep check`
(exit 2) instead of a trial.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from types import ModuleType
from typing import Any

from raysweep.config.space import first_values
from raysweep.config.spec import Spec
from raysweep.data.arrays import Batch
from raysweep.data.files import ResolvedData
from raysweep.data.storage import open_parquet
from raysweep.errors import UserInputError
from raysweep.worker.plan import LightningSettings


def import_trainer(name: str) -> ModuleType:
    """The trainer module, imported from the repo root (the job's working dir)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(name)


def check_trainer(spec: Spec, data: ResolvedData, source: str) -> None:
    """The trainer module imports and defines train(ctx) or a usable LightningModule."""
    try:
        module = import_trainer(spec.trainer)
    except Exception as exc:  # any import failure is the user's module
        raise UserInputError(
            f"{source}: trainer: cannot import {spec.trainer!r}: {type(exc).__name__}: {exc}"
        ) from None
    check_space_function(spec, source)
    transformed = check_transform(spec, data, module, source)
    if callable(getattr(module, "train", None)):
        return
    # (lazy: Lightning is imported only when the trainer is a LightningModule)
    from raysweep.worker.lightning import check_module, find_module_factory

    factory = find_module_factory(module)
    if factory is not None and spec.scaling.worker_group == "warm" and spec.scaling.num_workers > 1:
        raise UserInputError(
            f"{source}: scaling.worker_group: warm groups run plain train(ctx) trainers; {spec.trainer!r} is a "
            "LightningModule, which runs on Ray Train's worker groups (use auto or always)")
    if factory is not None and spec.checkpoint.every_n_steps is not None:
        raise UserInputError(
            f"{source}: checkpoint.every_n_steps: mid-epoch checkpoints need a plain train(ctx) trainer; "
            f"{spec.trainer!r} is a LightningModule (checkpoint every N epochs instead)")
    if factory is not None:
        check_lightning_scaling(spec, source)
    if factory is not None and spec.failure.on_nan != "fail":
        raise UserInputError(
            f"{source}: failure.on_nan: {spec.failure.on_nan} acts in ctx.backward, which plain train(ctx) trainers "
            f"call; {spec.trainer!r} is a LightningModule (use fail)")
    if factory is None:
        raise UserInputError(
            f"{source}: trainer: module {spec.trainer!r} defines neither train(ctx) nor one "
            "LightningModule subclass (or build_module(params))"
        )
    settings = LightningSettings(spec.lightning.precision, spec.lightning.gradient_clip_val)
    sample = transformed if transformed is not None else sample_batch(data)
    check_module(factory, sample_params(spec), sample, settings, spec.scaling.use_gpu, source)


def check_lightning_scaling(spec: Spec, source: str) -> None:
    """The scaling options only plain train(ctx) trainers have (ctx.prepare_model,
    ctx.backward, ctx.autocast): refused for a LightningModule, naming what to use."""
    scaling = spec.scaling
    refused = [
        ("strategy", scaling.strategy != "ddp", "Lightning trainers run Ray's DDP strategy"),
        ("precision", scaling.precision != "32", "set lightning.precision"),
        ("accumulate_steps", scaling.accumulate_steps != 1, "Lightning's accumulate_grad_batches is not wired"),
        ("compile", scaling.compile is not False, "compile the model in build_module"),
    ]
    for name, set_, instead in refused:
        if set_:
            raise UserInputError(f"{source}: scaling.{name}: plain train(ctx) trainers only; {spec.trainer!r} is a "
                                 f"LightningModule ({instead})")


def check_transform(spec: Spec, data: ResolvedData, module: ModuleType, source: str) -> Batch | None:
    """The module's `transform(batch, rng)`, if any, run once on the first rows (as a
    validation batch, rng=None): it must take named batches and return a dict of
    tensors. Returns its output (None: no transform)."""
    transform = getattr(module, "transform", None)
    if transform is None:
        return None
    name = f"{spec.trainer}.transform"
    if not callable(transform) or len(inspect.signature(transform).parameters) != 2:
        raise UserInputError(f"{source}: trainer: {name} must be a function transform(batch, rng)")
    if not data.layout.named:
        raise UserInputError(f"{source}: data.features: {name} takes named batches; list the columns in "
                             "data.columns instead of data.features/label")
    from raysweep.worker.context import TrainContext, TransformError  # (torch: only with a transform)

    ctx = TrainContext(params={}, num_epochs=1, seed=spec.seed, train=None, validation=None,  # type: ignore[arg-type]
                       report_fn=lambda m, c: None, transform=transform, transform_name=name)
    try:
        return ctx.transformed(data.layout, _sample_block(data), None, 0)
    except TransformError as exc:
        raise UserInputError(f"{source}: trainer: {exc}, on the first rows of {data.train_files[0]}") from None


def check_space_function(spec: Spec, source: str) -> dict[str, Any]:
    """The spec's `space_function` imports and draws on a throwaway study's trial;
    returns what it drew (and any constants it returned)."""
    if spec.space_function is None:
        return {}
    import optuna

    from raysweep.config.space import DefineByRun, load_space_function

    try:
        load_space_function(spec.space_function)
    except Exception as exc:  # any import failure is the user's module
        raise UserInputError(f"{source}: space_function: cannot import {spec.space_function!r}: "
                             f"{type(exc).__name__}: {exc}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    try:
        constants = DefineByRun(spec.space, spec.space_function)(trial)
    except Exception as exc:  # the user's function failed
        raise UserInputError(f"{source}: space_function: {spec.space_function} failed on a trial: "
                             f"{type(exc).__name__}: {exc}") from None
    if constants is not None and not isinstance(constants, dict):
        raise UserInputError(f"{source}: space_function: {spec.space_function} must return None or a dict, "
                             f"got {type(constants).__name__}")
    return {**trial.params, **(constants or {})}


def sample_params(spec: Spec) -> dict[str, Any]:
    """The fixed params plus one value from each searched param (low, or first choice;
    a conditional one only where its condition holds)."""
    return {**spec.params, **first_values(spec.space), **check_space_function(spec, spec.name)}


def _sample_block(data: ResolvedData, rows: int = 8) -> Any:
    from raysweep.data.columns import ColumnDataError

    table = open_parquet(data.train_files[0]).read_row_group(0, columns=data.columns).slice(0, rows)
    try:
        return data.layout.read([table])
    except ColumnDataError as exc:
        raise UserInputError(f"{data.train_files[0]}: {exc}") from None


def sample_batch(data: ResolvedData, rows: int = 8) -> Batch:
    """The first rows of the first training file, as the trainer gets them (before any transform)."""
    return data.layout.deliver(_sample_block(data, rows))
