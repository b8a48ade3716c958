"""What a sweep knows about its trials, as plain data: no Ray, no MLflow.

`SweepState` takes the trial events (start, result, complete, error) and keeps one
`TrialRecord` per trial, its `TrialState` and the running best; the MLflow writer
and the console printer only read it.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from raysweep.tracking import tags as tag


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
        """The state of a trial run read back from MLflow."""
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
    """Drain notices the trial checkpointed for (and moved on from)."""

    @property
    def wall_s(self) -> float:
        return (self.ended or time.time()) - self.started

    @property
    def epochs(self) -> int:
        return int(self.history[-1].get("epoch", -1)) + 1 if self.history else 0

    def best(self, metric: str, mode: str) -> dict[str, float] | None:
        rows = [r for r in self.history if metric in r]
        if not rows:
            return None
        pick = min if mode == "min" else max
        return pick(rows, key=lambda r: r[metric])


class SweepState:
    """Every trial of one sweep and the best result so far."""

    def __init__(self, metric: str, mode: str, max_epochs: int) -> None:
        self.metric, self.mode, self.max_epochs = metric, mode, max_epochs
        self.trials: dict[str, TrialRecord] = {}
        self.best_so_far: tuple[str, float] | None = None

    def add(self, record: TrialRecord) -> TrialRecord:
        self.trials[record.trial_id] = record
        best = record.best(self.metric, self.mode)
        if best is not None:
            self.consider(record.trial_id, best[self.metric])
        return record

    def result(self, trial_id: str, values: dict[str, float], first_step_unix: float | None = None,
               report_unix: float | None = None) -> bool:
        """Record one epoch's metrics; True when it is the best result so far."""
        record = self.trials[trial_id]
        if first_step_unix is not None and record.startup_s is None:
            record.first_step_unix = first_step_unix
            record.startup_s = first_step_unix - record.started
            values["startup_s"] = record.startup_s
        record.last_report_unix = report_unix or record.last_report_unix
        record.history.append(values)
        return self.metric in values and self.consider(trial_id, values[self.metric])

    def consider(self, trial_id: str, value: float) -> bool:
        """Whether `value` is the best so far (and so becomes it)."""
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
        record.checkpoint = checkpoint or record.checkpoint
        return record

    def fail(self, trial_id: str, error: str) -> TrialRecord:
        record = self.trials[trial_id]
        record.state, record.ended, record.error = TrialState.FAILED, time.time(), error
        return record

    def end(self, lost_as: TrialState) -> list[TrialRecord]:
        """Trials still running when the sweep ends were lost with it: they take
        `lost_as` (KILLED, or FAILED when the sweep failed). Returns them."""
        lost = [t for t in self.trials.values() if t.state is TrialState.RUNNING]
        for record in lost:
            record.state = lost_as
            record.ended = record.ended or time.time()
        return lost

    def in_state(self, *states: TrialState) -> list[TrialRecord]:
        return [t for t in self.trials.values() if t.state in states]

    def best_trial(self) -> TrialRecord | None:
        """The trial with the best metric among those that ended well."""
        sign = 1 if self.mode == "min" else -1
        scored: list[tuple[float, TrialRecord]] = []
        for record in self.trials.values():
            best = record.best(self.metric, self.mode) if record.state.ended_well else None
            if best is not None:
                scored.append((sign * best[self.metric], record))
        return min(scored, key=lambda pair: pair[0])[1] if scored else None
