"""What a sweep knows about its trials, as plain data: no Ray, no MLflow.

`SweepState` takes the trial events (start, result, complete, error) and keeps one
`TrialRecord` per trial, its `TrialState` and the running best; the MLflow writer
and the console printer only read it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysweep.config.constraints import Constraint, feasible
from raysweep.tracking import tags as tag
from raysweep.tracking.pareto import minimized, pareto_front


class TrialState(enum.Enum):
    """A trial's state, with its MLflow run status and the word shown for it."""

    RUNNING = ("RUNNING", "running")
    FINISHED = ("FINISHED", "finished")
    STOPPED_EARLY = ("FINISHED", "stopped early")
    """The scheduler stopped it before max_epochs: it ended well, with fewer epochs."""
    FAILED = ("FAILED", "failed")
    KILLED = ("KILLED", "killed")
    """Lost with a crashed or interrupted driver."""

    def __init__(self, mlflow_status: str, word: str) -> None:
        self.mlflow_status = mlflow_status
        self.word = word

    @property
    def ended_well(self) -> bool:
        return self in (TrialState.FINISHED, TrialState.STOPPED_EARLY)

    @classmethod
    def from_run(cls, status: str, tags: dict[str, str]) -> TrialState:
        """The state of a trial run read back from MLflow. A RUNNING run is running
        whatever its `raysweep.state` says: a driver lost between a close's tags and its
        status (or a run re-opened by a resume) leaves that tag behind, and the run is
        to be closed again."""
        if status == "RUNNING":
            return cls.RUNNING
        if tags.get(tag.STATE) in cls.__members__:
            return cls[tags[tag.STATE]]
        if status == "FINISHED" and tags.get(tag.EARLY_STOPPED) == "True":
            return cls.STOPPED_EARLY
        return cls[status] if status in cls.__members__ else cls.KILLED


@dataclass
class TrialRecord:
    """One trial: its MLflow run, params, per-epoch metrics and state."""

    trial_id: str
    run_id: str
    params: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    state: TrialState = TrialState.RUNNING
    error: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None
    startup_s: float | None = None
    """Trial start (on the driver) to the first training step (in a worker)."""
    checkpoint: str | None = None
    """The latest checkpoint the trial reported."""
    first_step_unix: float | None = None
    """Wall-clock time of the trial's first training step (in its worker)."""
    last_report_unix: float | None = None
    preemptions: int = 0
    node: str | None = None
    """The host its trial process ran on (Tune's `node_ip`; the latest, after a move)."""
    """Drain notices the trial checkpointed for (and moved on from)."""
    held_s: float = 0.0
    """Seconds the trial held its resources in earlier stretches (a sweep stopped and
    resumed runs a trial in several), not counting the one running now."""
    running_since: float | None = None
    """When its current stretch began (None: not running in this driver)."""

    def held_now(self, now: float | None = None) -> float:
        """Seconds the trial has held its resources, the running stretch included."""
        running = ((now or time.time()) - self.running_since) if self.running_since is not None else 0.0
        return self.held_s + running

    def stop_holding(self) -> None:
        self.held_s, self.running_since = self.held_now(), None

    @property
    def wall_s(self) -> float:
        return (self.ended or time.time()) - self.started

    @property
    def epochs(self) -> int:
        return int(self.history[-1].get("epoch", -1)) + 1 if self.history else 0

    def best(self, metric: str, mode: str, constraints: Sequence[Constraint] = ()) -> dict[str, float] | None:
        """The epoch row with the best `metric` (among rows that meet `constraints`)."""
        rows = [r for r in self.history if metric in r and feasible(constraints, r)]
        if not rows:
            return None
        pick = min if mode == "min" else max
        return pick(rows, key=lambda r: r[metric])

    def final(self, metrics: Sequence[str]) -> dict[str, float] | None:
        """The last epoch row that has every one of `metrics`."""
        rows = [r for r in self.history if all(m in r for m in metrics)]
        return rows[-1] if rows else None


class SweepState:
    """Every trial of one sweep and the best result so far.

    `objectives` (metric, mode) pairs make it multi-objective: a trial's point is its
    last epoch's values, the Pareto front is the non-dominated points of the trials
    that ended well and meet the `constraints`, and the best trial is the front's
    best by the first objective. With one objective, the best trial is the one with
    the best epoch among epochs that meet the constraints.
    """

    def __init__(self, metric: str, mode: str, max_epochs: int, objectives: Sequence[tuple[str, str]] = (),
                 constraints: Sequence[Constraint] = ()) -> None:
        self.metric, self.mode, self.max_epochs = metric, mode, max_epochs
        self.objectives = list(objectives) or [(metric, mode)]
        self.constraints = tuple(constraints)
        self.trials: dict[str, TrialRecord] = {}
        self.best_so_far: tuple[str, float] | None = None

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def metrics(self) -> list[str]:
        """The objectives' metrics, in order."""
        return [m for m, _ in self.objectives]

    def add(self, record: TrialRecord) -> TrialRecord:
        self.trials[record.trial_id] = record
        best = record.best(self.metric, self.mode, self.constraints)
        if best is not None:
            self.consider(record.trial_id, best[self.metric])
        return record

    def feasible(self, record: TrialRecord) -> bool | None:
        """Whether the trial's last epoch meets every constraint (None: no constraints
        or no epoch yet)."""
        if not self.constraints or not record.history:
            return None
        return feasible(self.constraints, record.history[-1])

    def row(self, record: TrialRecord) -> dict[str, float] | None:
        """The epoch that stands for the trial: its best (meeting the constraints); with
        several objectives, its last."""
        if self.multi_objective:
            return record.final(self.metrics)
        return record.best(self.metric, self.mode, self.constraints)

    def front(self) -> list[TrialRecord]:
        """The Pareto front: trials that ended well and meet the constraints whose last
        epoch's objectives no other such trial dominates (in trial order)."""
        modes = [mode for _, mode in self.objectives]
        candidates = [(r, row) for r in self.trials.values() if r.state.ended_well
                      for row in [r.final(self.metrics)] if row is not None and feasible(self.constraints, row)]
        points = [minimized(row, self.metrics, modes) for _, row in candidates]
        return [candidates[i][0] for i in sorted(pareto_front(points))]

    def pick(self, metric: str | None = None) -> TrialRecord | None:
        """The front's member with the best `metric` (default: the first objective)."""
        metric = metric or self.metric
        modes = dict(self.objectives)
        if metric not in modes:
            raise ValueError(f"--pick {metric}: not an objective of this sweep ({', '.join(modes)})")
        sign = 1 if modes[metric] == "min" else -1
        front = self.front()
        return min(front, key=lambda r: sign * (r.final(self.metrics) or {})[metric]) if front else None

    def result(self, trial_id: str, values: dict[str, float], first_step_unix: float | None = None,
               report_unix: float | None = None) -> bool:
        """Record one epoch's metrics; True when it is the best result so far."""
        record = self.trials[trial_id]
        if first_step_unix is not None and record.startup_s is None and not record.history:
            record.first_step_unix = first_step_unix
            record.startup_s = first_step_unix - record.started
            values["startup_s"] = record.startup_s
        record.last_report_unix = report_unix or record.last_report_unix
        if "epoch" in values:  # (a trial continued from an earlier checkpoint than its last epoch: logged again)
            record.history = [row for row in record.history if row.get("epoch", -1) < values["epoch"]]
        record.history.append(values)
        return (self.metric in values and feasible(self.constraints, values)
                and self.consider(trial_id, values[self.metric]))

    def consider(self, trial_id: str, value: float) -> bool:
        """Whether `value` is the best so far (and so becomes it). Several objectives:
        never (no one best value; the front is shown at the end)."""
        if self.multi_objective:
            return False
        sign = 1 if self.mode == "min" else -1
        if self.best_so_far is None or sign * value < sign * self.best_so_far[1]:
            self.best_so_far = (trial_id, value)
            return True
        return False

    def complete(self, trial_id: str, checkpoint: str | None = None) -> TrialRecord:
        record = self.trials[trial_id]
        stopped = record.epochs < self.max_epochs
        record.state = TrialState.STOPPED_EARLY if stopped else TrialState.FINISHED
        record.ended = time.time()
        record.stop_holding()
        record.checkpoint = checkpoint or record.checkpoint
        return record

    def fail(self, trial_id: str, error: str) -> TrialRecord:
        record = self.trials[trial_id]
        record.state, record.ended, record.error = TrialState.FAILED, time.time(), error
        record.stop_holding()
        return record

    def end(self, lost_as: TrialState) -> list[TrialRecord]:
        """Trials still running when the sweep ends were lost with it: they take
        `lost_as` (KILLED, or FAILED when the sweep failed). Returns them."""
        lost = [t for t in self.trials.values() if t.state is TrialState.RUNNING]
        for record in lost:
            record.state = lost_as
            record.ended = record.ended or time.time()
            record.stop_holding()
        return lost

    def resource_hours(self, per_trial: float) -> float:
        """Hours of a resource the sweep's trials held, at `per_trial` units each (a
        trial's workers' CPUs or GPUs), running ones until now, earlier drivers' too."""
        now = time.time()
        return sum(r.held_now(now) for r in self.trials.values()) * per_trial / 3600

    def epochs_spent(self) -> int:
        """Epochs the sweep's trials have trained (each trial's, earlier drivers' too;
        an epoch a continued trial trained again counts once)."""
        return sum(len(r.history) for r in self.trials.values())

    def in_state(self, *states: TrialState) -> list[TrialRecord]:
        return [t for t in self.trials.values() if t.state in states]

    def best_trial(self) -> TrialRecord | None:
        """The trial with the best metric among those that ended well (its best epoch
        meeting the constraints); multi-objective: the front's best by the first objective."""
        if self.multi_objective:
            return self.pick()
        sign = 1 if self.mode == "min" else -1
        scored: list[tuple[float, TrialRecord]] = []
        for record in self.trials.values():
            best = record.best(self.metric, self.mode, self.constraints) if record.state.ended_well else None
            if best is not None:
                scored.append((sign * best[self.metric], record))
        return min(scored, key=lambda pair: pair[0])[1] if scored else None


@dataclass
class SweepResult:
    """What `raysweep.run.tune` returns: the sweep's ids and where it lives, its trials' state."""

    sweep_id: str
    experiment: str
    parent_id: str
    tracking_uri: str
    sweep_dir: str
    state: SweepState
    wall_s: float
    space: list[str]
    """The searched params' names."""
    resumed_trials: int | None = None
    """Trials an earlier driver recorded, when the sweep was resumed."""
    report: Path | None = None
    warnings: list[str] = field(default_factory=list)
    registered: Any = None
    stopped_by: str | None = None
    """The budget that stopped the sweep early (`tune --resume` continues it)."""
    trial_resources: tuple[float, float] = (0.0, 0.0)
    """(CPUs, GPUs) one trial's workers hold: state.resource_hours(...) of each is what
    the sweep used."""

    @property
    def ok(self) -> bool:
        """At least one trial ended well (finished, or stopped early by the scheduler)."""
        return any(t.state.ended_well for t in self.state.trials.values())

    @property
    def best_trial(self) -> TrialRecord | None:
        return self.state.best_trial()
