"""Driver side, before anything starts: the trainer module imports and can train.

A plain trainer defines `train(ctx)`; a Lightning trainer's module is built and its
`training_step` run on a few real rows, so a broken module fails `raysweep check`
(exit 2) instead of a trial.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

import pyarrow.parquet as pq

from raysweep.config.spec import Spec
from raysweep.data.arrays import ArraySet, Batch
from raysweep.data.files import ResolvedData, table_to_columns
from raysweep.errors import UserInputError
from raysweep.execution.plan import LightningSettings


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
    if callable(getattr(module, "train", None)):
        return
    # (lazy: Lightning is imported only when the trainer is a LightningModule)
    from raysweep.execution.lightning import check_module, find_module_factory

    factory = find_module_factory(module)
    if factory is not None and spec.checkpoint.every_n_steps is not None:
        raise UserInputError(
            f"{source}: checkpoint.every_n_steps: mid-epoch checkpoints need a plain train(ctx) trainer; "
            f"{spec.trainer!r} is a LightningModule (checkpoint every N epochs instead)")
    if factory is None:
        raise UserInputError(
            f"{source}: trainer: module {spec.trainer!r} defines neither train(ctx) nor one "
            "LightningModule subclass (or build_module(params))"
        )
    settings = LightningSettings(spec.lightning.precision, spec.lightning.gradient_clip_val)
    check_module(factory, sample_params(spec), sample_batch(data), settings, spec.scaling.use_gpu, source)


def sample_params(spec: Spec) -> dict[str, Any]:
    """The fixed params plus one value from each searched param (low, or first choice)."""
    picked = {name: getattr(p, "low", None) if p.type != "categorical" else p.choices[0]
              for name, p in spec.space.items()}
    return {**spec.params, **picked}


def sample_batch(data: ResolvedData, rows: int = 8) -> Batch:
    table = pq.ParquetFile(data.train_files[0]).read_row_group(0, columns=data.columns).slice(0, rows)
    arrays = table_to_columns(table, data.columns)
    return ArraySet.from_columns(arrays, list(data.features), data.label).take(slice(0, rows))
