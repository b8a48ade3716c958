"""The experiment spec: YAML in, one frozen, validated `Spec` out.

Every stage of a run gets only its own section (`spec.data`, `spec.scaling`, ...).
Any error names the file and the dotted field path, states the rule and the value.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    field_validator,
    model_validator,
)

Scalar = Union[bool, int, float, str]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Section):
    """Where the Parquet data lives and which columns the trainer reads."""

    train: str
    """A Parquet file, a directory of Parquet files, or a glob; relative paths are
    taken from the current directory (the job's working dir)."""
    validation: str
    """Same forms as `train`; evaluated exactly, every row once per evaluation."""
    features: list[str] = Field(min_length=1)
    """Feature column names; shell-style patterns such as `px_*` are expanded
    against the files' schema, in the files' column order."""
    label: str
    """The label column."""


class FloatParam(_Section):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check_range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.step is not None and (self.step <= 0 or self.log):
            raise ValueError(f"step must be > 0 and not combined with log, got step={self.step}")
        return self


class IntParam(_Section):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: PositiveInt = 1

    @model_validator(mode="after")
    def _check_range(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        return self


class CategoricalParam(_Section):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)


SearchParam = Annotated[
    Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")
]


def _check_range(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low and high must be finite, got (low={low}, high={high})")
    if low >= high:
        raise ValueError(f"low < high must hold, got (low={low}, high={high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got (low={low}, high={high})")


class SamplerSpec(_Section):
    type: Literal["tpe", "random"] = "tpe"
    """Optuna sampler: TPE (the default) or random search."""
    seed: int = 0
    n_startup_trials: PositiveInt | None = None
    """TPE's random warm-up trials; Optuna's default (10) when unset."""


class SchedulerSpec(_Section):
    type: Literal["asha", "fifo"] = "asha"
    """`asha` stops weak trials early; `fifo` runs every trial to max_epochs."""
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    max_epochs: PositiveInt
    """Epochs every run trains for, unless the scheduler stops it earlier."""
    grace_period: PositiveInt = 1
    reduction_factor: float = Field(default=2.0, gt=1)

    @model_validator(mode="after")
    def _grace_within_budget(self) -> SchedulerSpec:
        if self.grace_period > self.max_epochs:
            raise ValueError(
                "grace_period <= max_epochs must hold, got "
                f"(grace_period={self.grace_period}, max_epochs={self.max_epochs})"
            )
        return self


class BudgetSpec(_Section):
    num_trials: PositiveInt
    max_concurrent_trials: PositiveInt | None = None
    """Upper bound; raysweep also caps it by the cluster's CPUs/GPUs."""


class ScalingSpec(_Section):
    num_workers: PositiveInt = 1
    """Ray Train workers (DDP processes) per run."""
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    worker_group: Literal["auto", "always"] = "auto"
    """auto: a one-worker sweep trial trains in its Tune trial's own (reused) process,
    without a Ray Train worker group, which saves most of the ~10 s a worker group
    takes to start; always: every trial starts a Ray Train worker group."""

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


class CheckpointSpec(_Section):
    every_n_epochs: PositiveInt = 1
    """Save a checkpoint every N epochs (and always at the last epoch)."""
    num_to_keep: PositiveInt = 2
    """Checkpoints kept per run: the latest ones, or the best by `score_metric`."""
    score_metric: str | None = None
    score_mode: Literal["min", "max"] = "min"


class FailureSpec(_Section):
    max_failures: int = Field(default=0, ge=0)
    """Restarts after a worker, node or trial dies: each restart resumes from the
    run's latest checkpoint. 0 fails the run at the first failure."""


class LightningSpec(_Section):
    """Settings for trainer modules that provide a LightningModule."""

    precision: Literal["32", "32-true", "64", "64-true", "bf16-mixed", "bf16-true", "16-mixed"] = "32"
    gradient_clip_val: float | None = Field(default=None, gt=0)


class Spec(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    """Experiment name: the MLflow experiment, the Optuna study, the run folder."""
    trainer: str
    """Importable module (from the repo root) that defines `train(ctx)`, or a
    LightningModule subclass (optionally a `build_module(params)` factory)."""
    data: DataSpec
    params: dict[str, Any] = Field(default_factory=dict)
    """Fixed params every run gets; a searched param of the same name overrides."""
    space: dict[str, SearchParam] = Field(default_factory=dict)
    sampler: SamplerSpec = SamplerSpec()
    scheduler: SchedulerSpec
    budget: BudgetSpec
    scaling: ScalingSpec = ScalingSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    lightning: LightningSpec = LightningSpec()
    failure: FailureSpec = FailureSpec()
    seed: int = 0
    """Seeds model init and the per-epoch shuffle."""
    deterministic: bool = False
    """Deterministic kernels in every worker (torch.use_deterministic_algorithms, cuDNN
    benchmark off, CUBLAS_WORKSPACE_CONFIG): needed for bit-equal GPU re-runs, slower
    there. CPU runs with the same seed repeat exactly without it."""
    storage_path: str = "results"
    """Run folder root (checkpoints, Tune state, Optuna journal): a local path or
    an s3:// / gs:// URI."""

    @field_validator("trainer")
    @classmethod
    def _module_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", value):
            raise ValueError(f"must be a dotted module name, got {value!r}")
        return value
