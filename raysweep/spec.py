"""The experiment spec: YAML in, one frozen, validated `Spec` out.

Every stage of a run gets only its own section (`spec.data`, `spec.scaling`, ...).
Any error names the file and the dotted field path, states the rule and the value.
"""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from raysweep.errors import UserInputError

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


def base_dir() -> Path:
    """Where relative spec paths point: RAYSWEEP_BASE_DIR (set for submitted jobs,
    whose working dir is a copy without data or results), else the current dir."""
    return Path(os.environ.get("RAYSWEEP_BASE_DIR") or os.getcwd())


def resolve_path(path: str) -> str:
    """A local path made absolute against base_dir(); URIs are kept as they are."""
    if "://" in path or os.path.isabs(path):
        return path
    return str(base_dir() / path)


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """`["a.b=3"]` -> `[(["a", "b"], 3)]`; values are parsed as YAML scalars."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserInputError(f"--set {item!r}: expected key.path=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key.split("."), value))
    return parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `raw` with each `key.path=value` set (missing dicts created)."""
    result = copy.deepcopy(raw)
    for path, value in parse_overrides(overrides):
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return result


def describe_error(error: dict[str, Any]) -> str:
    # Pydantic puts the union tag (e.g. 'float') into the location; drop it.
    parts = [str(p) for p in error["loc"] if p not in ("float", "int", "categorical")]
    path = ".".join(parts) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{path}: unknown key"
    if kind == "missing":
        return f"{path}: required field is missing"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error["input"], dict):  # a section-level rule already names its values
        return f"{path}: {message}"
    return f"{path}: {message} (got {error['input']!r})"


def read_spec_file(path: str | Path, what: str = "spec") -> dict[str, Any]:
    """A YAML file as a dict, or a one-line UserInputError."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: {what} file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserInputError(f"{path}: YAML does not parse{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{path}: expected a mapping of {what} fields, got {type(raw).__name__}")
    return raw


def validate_spec(raw: dict[str, Any], source: str) -> Spec:
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise UserInputError(f"{source}: {describe_error(exc.errors()[0])}") from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> Spec:
    """Read, override and validate a spec file. Raises UserInputError."""
    raw = apply_overrides(read_spec_file(path), overrides or [])
    return validate_spec(raw, str(path))
