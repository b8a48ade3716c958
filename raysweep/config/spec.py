"""The experiment spec: YAML in, one frozen, validated `Spec` out.

Every stage of a run gets only its own section (`spec.data`, `spec.scaling`, ...).
Any error names the file and the dotted field path, states the rule and the value.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from raysweep.config.constraints import Constraint

Scalar = Union[bool, int, float, str]


class _Section(BaseModel):
    # Unknown keys are errors; a field's docstring becomes its `description`
    # (`raysweep check SPEC --explain`, docs/spec-reference.md).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ColumnOptionsSpec(_Section):
    """Options of one column (`data.column_options.<name>`)."""

    dtype: Literal["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32",
                   "float64"] | None = None
    """Cast to this numpy dtype on the host; null: the column's own dtype (a uint8
    image stays uint8: convert it on the device)."""
    pad_value: float = 0
    """Variable-length lists: the value padding each row to the batch's longest; must
    fit the dtype."""
    max_length: PositiveInt | None = None
    """Variable-length lists: rows are cut to their first `max_length` values."""
    shape: list[PositiveInt] | None = Field(default=None, min_length=1)
    """A list column read as a tensor of this per-row shape."""
    categories: list[Scalar] | None = Field(default=None, min_length=1)
    """Dictionary-encoded columns (required for them): the values in code order; a row's
    code is its value's position here, the same in every file (a value not listed
    fails the run naming it)."""


RESOURCE_STEP = 0.0001
"""Ray counts CPUs and GPUs in steps of this (RESOURCE_UNIT_SCALING = 10000): a smaller
request is refused once Ray has started."""

URI_ONE_SLASH = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/(?!/)")
"""`s3:/bucket`: a URI missing a slash, which a filesystem would take as a local path."""


def no_missing_slash(value: str) -> str:
    if URI_ONE_SLASH.match(value):
        scheme, rest = value.split(":/", 1)
        raise ValueError(f"{value!r} has one slash after {scheme}: (a local folder named {scheme}:); "
                         f"write {scheme}://{rest}")
    return value


class DataSpec(_Section):
    """Where the Parquet data lives and which columns the trainer reads."""

    train: str
    """A Parquet file, a directory of Parquet files, or a glob; a local path (relative
    ones from the current directory, the job's working dir), `file://`, `s3://` or
    `gs://` (credentials and endpoint from the standard environment, never here)."""
    validation: str
    """Same forms as `train`; evaluated exactly, every row once per evaluation."""
    features: list[str] | None = Field(default=None, min_length=1)
    """The tabular shorthand: feature column names; shell-style patterns such as `px_*`
    are expanded against the files' schema, in the files' column order. Batches are
    `(x, y)`: x the float32 matrix of these scalar columns, or the one tensor column
    (fixed_size_list / fixed_shape_tensor) as is, in its own dtype. Give `features` or
    `columns`, not both."""
    label: str | None = None
    """The label column (`y` of the tabular shorthand; with `columns` it joins the dict).
    Optional: without one, tabular batches are `x` alone."""
    columns: list[str] | None = Field(default=None, min_length=1)
    """Named batches: these columns (names or patterns) as a dict per batch. Scalars,
    tensors and dictionary codes become tensors in their own dtype; variable-length
    number lists are padded to the batch's longest row with `<name>_lengths` beside
    them; binary and string columns become Python lists (for the trainer's `transform`)."""
    column_options: dict[str, ColumnOptionsSpec] = {}
    """Per-column options by column name: `dtype` (cast on the host), `pad_value` and
    `max_length` (variable-length list columns), `shape` (read a list column as a tensor
    of this shape; every row must have exactly that many values)."""
    transform_workers: PositiveInt = 2
    """Background threads running the trainer module's `transform(batch, rng)`, if it
    defines one (named batches only)."""
    loader: Literal["auto", "memory", "stream"] = "auto"
    """memory: the driver reads the used columns once into Ray's object store and every
    worker maps them; stream: each rank reads only its own (file, row group) units
    straight from storage, nothing on the driver; auto: memory when the decoded
    columns fit in a quarter of the smallest node's object store, else stream."""
    shuffle_window_rows: PositiveInt = 16384
    """Stream loader: a rank shuffles its rows within windows of this many rows (its
    read unit and memory bound); the (file, row group) order is shuffled globally."""
    prefetch_windows: PositiveInt = 2
    """Stream loader: decoded windows kept ready ahead of the trainer."""
    read_threads: PositiveInt = 2
    """Stream loader: background threads per worker reading and decoding windows."""
    cache: Literal["host", "gpu"] = "host"
    """Memory loader on GPU workers. host: each batch's rows are gathered on the host by
    `gather_threads` threads into reused page-locked buffers and copied without blocking;
    gpu: the used fixed-width columns are copied once into every worker's GPU memory
    and batches are gathered there (when they fit in half of the GPU's free memory;
    otherwise host, said in the worker's log). No effect on CPU workers, with a
    `transform`, or for variable-length columns (gathered on the host)."""
    gather_threads: PositiveInt = 4
    """Memory loader on GPU workers: threads gathering each batch's rows."""

    @field_validator("train", "validation")
    @classmethod
    def _data_uri(cls, value: str) -> str:
        return no_missing_slash(value)

    @model_validator(mode="after")
    def _one_batch_form(self) -> DataSpec:
        if (self.features is None) == (self.columns is None):
            raise ValueError("give either features (tabular (x, y) batches) or columns (named batches), "
                             "not both and not neither")
        if self.cache == "gpu" and self.loader == "stream":
            raise ValueError("cache: gpu keeps the memory loader's columns in GPU memory; loader: stream reads "
                             "each rank's rows from storage instead (use loader: memory or auto)")
        return self


class _Param(_Section):
    """What every searched param kind has."""

    when: dict[str, Union[Scalar, list[Scalar]]] | None = None
    """Draw this param only when each named param took the given value (or one of a
    list), e.g. `{optimizer: sgd}`; otherwise the trial has no value for it and the
    trainer gets the `params` value, if any. Each name must be a categorical param of
    this space, each value one of its choices."""

    def when_values(self) -> dict[str, list[Scalar]]:
        """`when` with every value as a list ({} without one)."""
        return {k: v if isinstance(v, list) else [v] for k, v in (self.when or {}).items()}


class FloatParam(_Param):
    """A real number from [low, high] (Optuna's FloatDistribution)."""

    type: Literal["float"]
    """Selects this param kind."""
    low: float
    """Smallest value, inclusive."""
    high: float
    """Largest value, inclusive; must be > low."""
    log: bool = False
    """Sample uniformly in log space (for learning rates, decays); needs low > 0."""
    step: float | None = None
    """Sample only `low, low + step, low + 2 * step, ...`; null: any real number.
    Not combined with log."""

    @model_validator(mode="after")
    def _check_range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.step is not None and (self.step <= 0 or self.log):
            raise ValueError(f"step must be > 0 and not combined with log, got step={self.step}")
        return self


class IntParam(_Param):
    """An integer from [low, high] (Optuna's IntDistribution)."""

    type: Literal["int"]
    """Selects this param kind."""
    low: int
    """Smallest value, inclusive."""
    high: int
    """Largest value, inclusive; must be > low."""
    log: bool = False
    """Sample uniformly in log space (for widths, batch sizes); needs low > 0, and
    Optuna then accepts only step 1."""
    step: PositiveInt = 1
    """Sample only `low, low + step, low + 2 * step, ...`; 1: every integer."""

    @model_validator(mode="after")
    def _check_range(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError(f"a log range takes step 1 only (Optuna's rule), got step={self.step}")
        return self


class CategoricalParam(_Param):
    """One value from a fixed list (Optuna's CategoricalDistribution)."""

    type: Literal["categorical"]
    """Selects this param kind."""
    choices: list[Scalar] = Field(min_length=1)
    """The candidate values (booleans, numbers, strings), unordered to the sampler."""


SearchParam = Annotated[
    Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")
]


def _parses_as_constraint(text: str) -> str:
    Constraint.parse(text)
    return text


def _condition_cycle(space: dict[str, SearchParam]) -> list[str]:
    """A cycle of `when:` conditions ([a, b, a]), or []."""
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> list[str]:
        state[name] = 1
        for key in space[name].when_values():
            if state.get(key) == 1:
                return [*path[path.index(key):], key] if key in path else [name, key]
            if key in space and key not in state:
                found = visit(key, [*path, key])
                if found:
                    return found
        state[name] = 2
        return []

    for name in space:
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return []


def _check_range(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low and high must be finite, got (low={low}, high={high})")
    if low >= high:
        raise ValueError(f"low < high must hold, got (low={low}, high={high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got (low={low}, high={high})")


class SamplerSpec(_Section):
    """How Optuna proposes each trial's params."""

    type: Literal["tpe", "random", "gp", "cmaes", "nsga2"] = "tpe"
    """Optuna sampler: `tpe` (the default), `random`, `gp` (Gaussian-process Bayesian
    optimization, Optuna's GPSampler), `cmaes` (CMA-ES; categorical params drawn at
    random) or `nsga2` (the NSGA-II genetic algorithm)."""
    seed: int = Field(default=0, ge=0, lt=2**32)
    """Seed of the sampler's own random draws; independent of the top-level `seed`."""
    n_startup_trials: PositiveInt | None = None
    """Random trials before a model-based sampler (tpe, gp, cmaes) takes over; null:
    Optuna's default (tpe and gp 10, cmaes 1). Ignored by random and nsga2."""
    multivariate: bool | None = None
    """tpe only: model the params jointly (true: Optuna's multivariate TPE) or one by
    one (false); null: Optuna's default (jointly, for one objective)."""
    group: bool = False
    """tpe only (not with multivariate: false): model separately each group of params
    that occur together (for spaces with `when:` conditions)."""
    rungs: bool = False
    """tpe only, one objective: fit the sampler's model on each trial's value at the
    latest epoch that enough finished trials reached (at least n_startup_trials, BOHB's
    rule), rather than on how each trial ended (stopped trials ranked below finished
    ones by how far they got). Off by default: on the search benchmark it tried more
    configurations in the same epochs but found worse ones (docs/benchmarks.md)."""
    population_size: PositiveInt | None = None
    """nsga2 only: trials per generation; null: Optuna's default (50)."""
    warm_start: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """An earlier sweep of this experiment (its sweep id, under the same storage_path):
    its finished trials whose params lie in this space join this sweep's study before
    the first trial, so the sampler starts from what that sweep learned."""
    warm_start_top_k: int = Field(default=0, ge=0)
    """With warm_start: the earlier sweep's best K configs run first, as this sweep's
    first trials."""

    @model_validator(mode="after")
    def _options_of_the_sampler(self) -> SamplerSpec:
        if self.multivariate is not None and self.type != "tpe":
            raise ValueError(f"multivariate is a tpe option, the sampler is {self.type}")
        if self.group and (self.type != "tpe" or self.multivariate is False):
            raise ValueError("group needs type: tpe, without multivariate: false")
        if self.rungs and self.type != "tpe":
            raise ValueError(f"rungs is a tpe option, the sampler is {self.type}")
        if self.population_size is not None and self.type != "nsga2":
            raise ValueError(f"population_size is an nsga2 option, the sampler is {self.type}")
        return self


def max_brackets(max_t: int, grace_period: int, reduction_factor: float) -> int:
    """How many Hyperband brackets have at least one rung below max_t (1 when none has)."""
    count = 0
    while grace_period * reduction_factor ** count < max_t:
        count += 1
    return max(1, count)


class SchedulerSpec(_Section):
    """Epochs per run, early stopping, and the metric a sweep optimizes."""

    type: Literal["asha", "hyperband", "fifo"] = "asha"
    """`asha` stops weak trials early; `hyperband` is ASHA in several brackets, each with
    a longer grace period than the one before (asynchronous Hyperband: a trial is given
    a bracket when it starts, seeded by `seed`), for when early epochs predict late ones
    poorly; `fifo` runs every trial to max_epochs."""
    metric: str | list[str] = "val_loss"
    """Metric the sweep optimizes, a key the trainer reports every epoch: ASHA
    compares trials by it, Optuna learns from it, the best trial is picked by it. A
    list makes a multi-objective sweep (with a list `mode` of the same length): Optuna
    keeps every objective, ASHA promotes by Pareto rank (ties: the lower first
    objective), the summary, MLflow and the report show the Pareto front, and the
    best trial is the front's best by the first objective."""
    mode: Literal["min", "max"] | list[Literal["min", "max"]] = "min"
    """Whether a lower (`min`) or higher (`max`) `metric` is better; one per metric of a list."""
    max_epochs: PositiveInt
    """Epochs every run trains for, unless the scheduler stops it earlier."""
    grace_period: PositiveInt = 1
    """ASHA: epochs a trial trains before it can be stopped; <= max_epochs."""
    reduction_factor: float = Field(default=2.0, gt=1)
    """ASHA: at each rung (grace_period, x this, x this^2, ... epochs) only the best
    1/reduction_factor of trials go on; 2: half stop."""
    brackets: PositiveInt | None = None
    """hyperband: how many brackets (bracket s's first rung at grace_period x
    reduction_factor^s epochs); null: every one with a rung below max_epochs."""

    @property
    def metrics(self) -> list[str]:
        """The objectives' metrics (one for a single-objective sweep)."""
        return list(self.metric) if isinstance(self.metric, list) else [self.metric]

    @property
    def modes(self) -> list[str]:
        return list(self.mode) if isinstance(self.mode, list) else [self.mode]

    @property
    def primary(self) -> str:
        """The first objective's metric: the one ASHA's single-metric forms, the running
        best and checkpoint ranking use."""
        return self.metrics[0]

    @property
    def primary_mode(self) -> str:
        return self.modes[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1

    @model_validator(mode="after")
    def _one_mode_per_metric(self) -> SchedulerSpec:
        if isinstance(self.metric, list) != isinstance(self.mode, list) or len(self.metrics) != len(self.modes):
            raise ValueError(f"metric and mode must both be one value or lists of the same length, got "
                             f"(metric={self.metric!r}, mode={self.mode!r})")
        if not self.metrics or len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metric must name each objective once, got {self.metric!r}")
        return self

    @model_validator(mode="after")
    def _brackets_of_hyperband(self) -> SchedulerSpec:
        if self.brackets is not None and self.type != "hyperband":
            raise ValueError(f"brackets is a hyperband option, the scheduler is {self.type}")
        most = max_brackets(self.max_epochs, self.grace_period, self.reduction_factor)
        if self.brackets is not None and self.brackets > most:
            raise ValueError(f"brackets: {self.brackets} is more than the {most} that have a rung below max_epochs "
                             f"({self.max_epochs}) at grace_period {self.grace_period} and reduction_factor "
                             f"{self.reduction_factor:g}")
        return self

    @model_validator(mode="after")
    def _grace_within_budget(self) -> SchedulerSpec:
        if self.grace_period > self.max_epochs:
            raise ValueError(
                "grace_period <= max_epochs must hold, got "
                f"(grace_period={self.grace_period}, max_epochs={self.max_epochs})"
            )
        return self


class BudgetSpec(_Section):
    """How many trials a sweep runs, how many at once, and when it stops early."""

    num_trials: PositiveInt | None = None
    """Trials the sweep runs in all (Tune's num_samples); stopped and failed
    trials count. With a resource budget (total_epochs, max_hours or max_gpu_hours):
    a cap (null: no cap, new configurations until the resource is spent); without
    one: required."""
    total_epochs: PositiveInt | None = None
    """Epochs the sweep's trials may train in all (each trial's epochs, not times its
    workers): new configurations are sampled until they are spent, then the sweep
    stops (resumable, as for max_hours: running trials keep their latest
    checkpoints). A resumed sweep counts the epochs its earlier drivers spent, and
    `tune --resume` may be given a new one. Stops within about one epoch per running
    trial of the figure."""
    max_concurrent_trials: PositiveInt | None = None
    """Trials running at once, an upper bound: raysweep also caps it by the trials
    that fit the cluster's CPUs/GPUs and by num_trials; null: as many as fit."""
    max_hours: float | None = Field(default=None, gt=0)
    """Stop the sweep after this many hours of this driver's run: the running trials
    stop and keep their latest checkpoints, the parent run records why, and
    `tune --resume` continues them (with the max_hours it is given then); null: no
    limit."""
    max_gpu_hours: float | None = Field(default=None, gt=0)
    """Stop the sweep (resumable, as for max_hours) once its trials have held this many
    GPU-hours (a trial's workers' GPUs times the time it held them, earlier drivers'
    stretches of a resumed sweep included; MLflow system/gpu_hours per trial and on the
    parent run). `tune --resume` may be given a new one."""
    max_failed_trials: PositiveInt | None = None
    """Stop the sweep (resumable, as for max_hours) once this many of its trials have
    failed (a trial retried after a failure is not failed); null: no limit."""

    @model_validator(mode="after")
    def _some_end(self) -> BudgetSpec:
        if self.num_trials is None and self.total_epochs is None and self.max_hours is None \
                and self.max_gpu_hours is None:
            raise ValueError("give num_trials (trials in all) or a resource budget to spend (total_epochs, "
                             "max_hours or max_gpu_hours), or both")
        return self


class ScalingSpec(_Section):
    """Workers per run and the resources each one reserves."""

    num_workers: PositiveInt = 1
    """Ray Train workers (DDP processes) per run; `[min, max]` makes the run elastic
    (sets min_workers, and num_workers to max)."""
    min_workers: PositiveInt | None = None
    """Elastic runs (Ray Train worker groups): a run starts with as many workers as
    the cluster holds between min_workers and num_workers, goes on with fewer after a
    node is lost (restarted from its latest checkpoint, the epoch's rest re-sharded so
    no row is trained twice or skipped; memory loader), and grows back when capacity
    returns (checked every elastic_check_s, each resize a restart from the latest
    checkpoint). null: a fixed num_workers."""
    elastic_check_s: float = Field(default=60.0, gt=0)
    """Elastic runs: how often a running worker group looks for room to grow."""
    cpus_per_worker: float = Field(default=1.0, gt=0)
    """CPUs Ray reserves per worker (fractions allowed); with num_workers, decides
    how many trials fit the cluster at once."""
    gpus_per_worker: float = Field(default=0.0, ge=0)
    """GPUs Ray reserves per worker; 0: train on CPU, > 0: train on CUDA. A fraction
    packs several one-worker trials on a GPU; a multi-worker run needs whole GPUs
    (NCCL refuses two ranks of one process group on one device)."""
    worker_group: Literal["auto", "always", "warm"] = "auto"
    """auto: a one-worker sweep trial trains in its Tune trial's own (reused) process,
    without a Ray Train worker group, which saves most of the ~10 s a worker group
    takes to start; always: every trial starts a Ray Train worker group; warm: as
    auto, and a multi-worker sweep trial's workers (its own process as rank 0, N-1
    worker actors in its placement group) and their process group are kept for the
    next trial Tune runs in that process: every rank watches drain notices, no Train worker
    restarts (a failure fails the trial, which Tune retries from its checkpoint), plain
    train(ctx) trainers only. `raysweep train` always runs a Ray Train worker group."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """How a plain trainer's model is spread over its workers (`ctx.prepare_model`):
    ddp, every rank holds the whole model and gradients are all-reduced; fsdp, FSDP2
    (`fully_shard`): each rank holds 1/N of the weights, gradients and optimizer
    state, and checkpoints are saved sharded (every rank its part) and can resume on
    another number of workers. Runs in Ray Train worker groups, not warm groups."""
    shard_modules: list[str] = Field(default_factory=list)
    """fsdp: class names of the submodules sharded one by one (e.g. [Block]); empty:
    the model's shard_units() if defined, else the children of its ModuleLists (a
    transformer's blocks), else its direct children with parameters."""
    precision: Literal["32", "bf16-mixed", "bf16-true"] = "32"
    """Plain trainers: 32; bf16-mixed, bf16 compute with fp32 weights (`ctx.autocast()`
    under ddp, FSDP2's mixed-precision policy with fp32 gradient reduction under
    fsdp); bf16-true, the weights themselves in bf16. Lightning trainers: set
    lightning.precision instead."""
    accumulate_steps: PositiveInt = 1
    """Micro-batches whose gradients are summed before one optimizer step
    (`ctx.backward`); only the last one communicates. The step sees the same gradient
    as one batch N times as large."""
    pending_timeout_s: float | None = Field(default=None, gt=0)
    """Stop the sweep (resumable, as budget.max_hours does) when a trial has waited this
    long to be placed and started (its process's start-up counts: allow it some
    seconds), saying what it asks for and what the cluster has free: spot
    capacity that is gone, a node type that never comes up. null: wait as long as it
    takes. `tune --resume` may be given another value."""
    accelerator_type: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """GPU type every worker of a run needs (Ray's accelerator_type resource label: A100,
    H100, L4, ...); null: any. `check --cluster PROFILE` refuses a type no node type of
    the cluster offers."""
    compile: Literal[False, "default", "max-autotune"] = False
    """torch.compile the prepared model (false: off). The first step's wait for the
    compiler is reported as the metric compile_s."""

    @model_validator(mode="before")
    @classmethod
    def _num_workers_range(cls, data: Any) -> Any:
        """`num_workers: [min, max]`: an elastic run."""
        if isinstance(data, dict) and isinstance(data.get("num_workers"), list | tuple):
            bounds = data["num_workers"]
            if len(bounds) != 2:
                raise ValueError(f"num_workers: a number or [min, max], got {bounds!r}")
            data = {**data, "min_workers": bounds[0], "num_workers": bounds[1]}
        return data

    @model_validator(mode="after")
    def _elastic(self) -> ScalingSpec:
        if self.min_workers is None:
            return self
        if self.min_workers > self.num_workers:
            raise ValueError(f"min_workers ({self.min_workers}) must be <= num_workers ({self.num_workers})")
        if self.worker_group == "warm":
            raise ValueError("min_workers: elastic runs resize Ray Train worker groups; worker_group: warm keeps "
                             "a fixed group (use auto or always)")
        return self

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @field_validator("cpus_per_worker", "gpus_per_worker")
    @classmethod
    def _ray_can_count_it(cls, value: float, info: ValidationInfo) -> float:
        if value and value < RESOURCE_STEP:
            raise ValueError(f"{value:g} is below {RESOURCE_STEP:g}, the smallest amount Ray counts")
        if info.field_name == "gpus_per_worker" and value > 1 and not float(value).is_integer():
            raise ValueError(f"{value:g}: above one GPU a worker takes whole GPUs (Ray refuses a fraction above 1)")
        return value

    @field_validator("gpus_per_worker")
    @classmethod
    def _one_gpu_per_rank(cls, value: float, info: ValidationInfo) -> float:
        workers = info.data.get("num_workers", 1)
        if workers > 1 and 0 < value < 1:
            raise ValueError(
                f"{workers} workers at a fraction of a GPU each could put two NCCL ranks of one run on one GPU, "
                "which NCCL refuses ('invalid usage'); use 1 or more, or one worker per trial to pack trials")
        return value

    @model_validator(mode="after")
    def _fsdp_in_train_groups(self) -> ScalingSpec:
        if self.strategy == "fsdp" and self.worker_group == "warm" and self.num_workers > 1:
            raise ValueError("strategy: fsdp runs in Ray Train worker groups, which save each rank's shards; "
                             "warm groups keep rank 0's checkpoint only (use worker_group: auto or always)")
        if self.shard_modules and self.strategy != "fsdp":
            raise ValueError("shard_modules: only strategy fsdp shards modules")
        return self


class CheckpointSpec(_Section):
    """How often a run saves its state, and which saves it keeps."""

    every_n_epochs: PositiveInt = 1
    """Save a checkpoint every N epochs (and always at the last epoch)."""
    every_n_steps: PositiveInt | None = None
    """Also save one every N training steps within an epoch, holding the data cursor
    (epoch, step): a resume continues at the next batch. null: epoch ends only."""
    num_to_keep: PositiveInt = 2
    """Checkpoints kept per run: the latest ones, or the best by `score_metric`."""
    score_metric: str | None = None
    """Reported metric that ranks checkpoints for num_to_keep; null: keep the latest."""
    score_mode: Literal["min", "max"] = "min"
    """Whether a lower (`min`) or higher (`max`) score_metric is better."""

    @model_validator(mode="after")
    def _steps_keep_the_latest(self) -> CheckpointSpec:
        if self.every_n_steps is not None and self.score_metric is not None:
            raise ValueError("every_n_steps keeps the latest checkpoints: mid-epoch ones carry no metric to rank "
                             f"by, got (every_n_steps={self.every_n_steps}, score_metric={self.score_metric!r})")
        return self


class FailureSpec(_Section):
    """What a run does when a process or node dies."""

    max_failures: int = Field(default=0, ge=0)
    """Restarts after a worker, node or trial dies: each restart resumes from the
    run's latest checkpoint. 0 fails the run at the first failure."""
    max_preemptions: int = Field(default=10, ge=0)
    """Drain notices (spot or preemptible nodes taken away) a run may checkpoint for and
    move on from; none counts against max_failures. Past this many the run fails, naming
    the count, at its next start (its latest checkpoint kept). Plain trainers: a
    LightningModule's runs do not checkpoint on a drain notice."""
    on_nan: Literal["fail", "stop", "skip_batch"] = "fail"
    """What a NaN or infinite training loss does (plain trainers, through
    `ctx.backward`): `fail` the run within 16 steps, naming the epoch and batches;
    `stop` it as an early stop after its last complete epoch (a sweep's sampler takes
    it as pruned; the run records why); `skip_batch` drops that batch's update (its
    accumulation group's, on every rank together), counts it in the `skipped_batches`
    metric, and fails an epoch whose every batch was dropped. `stop` and `skip_batch`
    look at every step's loss (one host sync per step, and one all-reduce with
    several ranks)."""


class LightningSpec(_Section):
    """Settings for trainer modules that provide a LightningModule."""

    precision: Literal["32", "32-true", "64", "64-true", "bf16-mixed", "bf16-true", "16-mixed"] = "32"
    """Lightning Trainer precision: `32`/`64` full precision; `*-mixed` autocast with
    full-precision weights (`16-mixed` needs a GPU); `*-true` everything in that dtype."""
    gradient_clip_val: float | None = Field(default=None, gt=0)
    """Clip the gradients' global L2 norm to this value (Lightning's norm
    clipping); null: no clipping."""


class Spec(_Section):
    """An experiment: data, trainer, search space, and how runs and sweeps run."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    """Experiment name: the MLflow experiment, the Optuna study, the run folder."""
    trainer: str
    """Importable module (from the repo root) that defines `train(ctx)`, or a
    LightningModule subclass (optionally a `build_module(params)` factory)."""
    data: DataSpec
    """The training and validation data."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Fixed params every run gets; a searched param of the same name overrides."""
    space: dict[str, SearchParam] = Field(default_factory=dict)
    """Searched params by name: each sweep trial samples one value of each (of a param
    with `when:`, only where its condition holds). `raysweep train` uses `params` only."""
    space_function: str | None = Field(default=None, pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
    """`module:function` (imported from the repo root, as `trainer` is) for what YAML
    cannot say, in Optuna's define-by-run form: called with each trial's optuna.Trial
    after the `space` params were drawn (it may read them from `trial.params`), it
    draws more with `trial.suggest_*` and may return a dict of constant params."""
    sampler: SamplerSpec = SamplerSpec()
    """How Optuna proposes each trial's params."""
    constraints: list[Annotated[str, AfterValidator(_parses_as_constraint)]] = Field(default_factory=list)
    """Limits on reported metrics, each `METRIC <= NUMBER` or `METRIC >= NUMBER` (for
    example `params_count <= 1e6`): the samplers learn them (each trial's constraint
    values in the study; not cmaes), a trial whose last epoch breaks one is infeasible (marked in the table,
    the report and MLflow) and never the best. A trial that does not report a
    constrained metric fails after its first report, naming it."""
    scheduler: SchedulerSpec
    """Epochs per run, early stopping, and the metric a sweep optimizes."""
    budget: BudgetSpec
    """How many trials a sweep runs, and how many at once."""
    scaling: ScalingSpec = ScalingSpec()
    """Workers per run and the resources each one reserves."""
    checkpoint: CheckpointSpec = CheckpointSpec()
    """How often a run saves its state, and which saves it keeps."""
    lightning: LightningSpec = LightningSpec()
    """Trainer settings used only when `trainer` is a LightningModule."""
    failure: FailureSpec = FailureSpec()
    """What a run does when a process or node dies."""
    seed: int = Field(default=0, ge=0, lt=2**32)
    """Seeds model init and the per-epoch shuffle (0 <= seed < 2**32, NumPy's range)."""
    deterministic: bool = False
    """Deterministic kernels in every worker (torch.use_deterministic_algorithms, cuDNN
    benchmark off, CUBLAS_WORKSPACE_CONFIG): needed for bit-equal GPU re-runs, slower
    there. CPU runs with the same seed repeat exactly without it."""
    storage_path: str = "results"
    """Run folder root (checkpoints, Tune state, Optuna journal): a local path or
    an s3:// / gs:// URI."""


    def parsed_constraints(self) -> list[Constraint]:
        return [Constraint.parse(text) for text in self.constraints]

    @model_validator(mode="after")
    def _sampler_takes_the_objectives(self) -> Spec:
        if self.sampler.type == "cmaes" and self.scheduler.multi_objective:
            raise ValueError(f"sampler.type: cmaes optimizes one objective; scheduler.metric names "
                             f"{len(self.scheduler.metrics)} (use tpe, nsga2, gp or random)")
        if self.sampler.rungs and self.scheduler.multi_objective:
            raise ValueError(f"sampler.rungs: Optuna keeps no per-epoch values for several objectives; "
                             f"scheduler.metric names {len(self.scheduler.metrics)} (drop sampler.rungs)")
        if self.sampler.type == "cmaes" and self.constraints:
            raise ValueError("sampler.type: cmaes takes no constraints (use tpe, nsga2, gp or random)")
        named = set(self.scheduler.metrics) & {c.metric for c in self.parsed_constraints()}
        if named:
            raise ValueError(f"constraints: {', '.join(sorted(named))} is an objective (scheduler.metric); "
                             "constrain other metrics")
        return self

    @model_validator(mode="after")
    def _gpu_budget_needs_gpus(self) -> Spec:
        if self.budget.max_gpu_hours is not None and not self.scaling.use_gpu:
            raise ValueError("budget.max_gpu_hours: the trials hold no GPUs (scaling.gpus_per_worker is 0); "
                             "use budget.max_hours")
        return self

    @model_validator(mode="after")
    def _checkpoints_between_optimizer_steps(self) -> Spec:
        every, accumulate = self.checkpoint.every_n_steps, self.scaling.accumulate_steps
        if every is not None and every % accumulate:
            raise ValueError(f"checkpoint.every_n_steps: {every} is not a multiple of scaling.accumulate_steps "
                             f"({accumulate}); a mid-epoch checkpoint is taken between optimizer steps")
        return self

    @model_validator(mode="after")
    def _conditions_name_choices(self) -> Spec:
        for name, param in self.space.items():
            for key, allowed in param.when_values().items():
                where = f"space.{name}.when.{key}"
                parent = self.space.get(key)
                if parent is None or key == name:
                    raise ValueError(f"{where}: not another searched param (space: {', '.join(self.space)})")
                if not isinstance(parent, CategoricalParam):
                    raise ValueError(f"{where}: a condition names a categorical param; {key} is {parent.type}")
                for value in allowed:
                    if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in parent.choices):
                        raise ValueError(f"{where}: {value!r} is not one of {key}'s choices {parent.choices}")
        cycle = _condition_cycle(self.space)
        if cycle:
            raise ValueError(f"space.{cycle[0]}.when: the conditions form a cycle ({' -> '.join(cycle)})")
        return self

    @field_validator("storage_path")
    @classmethod
    def _storage_uri(cls, value: str) -> str:
        return no_missing_slash(value)

    @field_validator("trainer")
    @classmethod
    def _module_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", value):
            raise ValueError(f"must be a dotted module name, got {value!r}")
        return value
