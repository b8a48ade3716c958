"""Asynchronous successive halving on several objectives (MO-ASHA, Schmucker et al. 2021).

Ray's ASHA compares one metric against a rung's percentile cutoff; here a trial reaching
a rung is ranked with the vectors already recorded there by non-dominated sorting (ties
within a front: the lower first objective first) and goes on if it lands in the top
1/reduction_factor. The rungs, and when a trial is judged, mirror Ray's `_Bracket`.

With `brackets` > 1 it is asynchronous Hyperband (Li et al. 2020, as Ray's
AsyncHyperBandScheduler): bracket s has its first rung at grace_period *
reduction_factor**s, so its trials run longer before they can be stopped; each trial
is given a bracket when it is added, with Ray's probabilities (bracket s in proportion
to e**(its rung count)), drawn from a generator seeded by `seed` (Ray's draws from
NumPy's global one), so a sweep's brackets are the same on every run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from raysweep.config.spec import max_brackets
from raysweep.report import EPOCHS_COMPLETED
from raysweep.tracking.pareto import MODES, minimized, rank_order

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial


def promote(recorded: Sequence[Sequence[float]], candidate: Sequence[float], reduction_factor: float) -> bool:
    """Whether `candidate` (minimized) goes on past a rung that recorded `recorded`: the first
    at a rung always does; otherwise it must rank among the top ceil((n + 1) / reduction_factor)
    of the n recorded and itself. A candidate equal to a recorded vector ranks before it, as
    Ray's ASHA lets a trial equal to its cutoff go on."""
    if not recorded:
        return True
    order = rank_order([candidate, *recorded])
    return order.index(0) < math.ceil((len(recorded) + 1) / reduction_factor)


class MultiObjectiveASHA(FIFOScheduler):
    """ASHA that promotes by non-dominated sorting of `metrics` (each with its mode).

    Rungs sit at grace_period * reduction_factor**k below max_t; a result at max_t stops
    the trial. A result without `time_attr` or one of the metrics is let through unjudged.
    """

    def __init__(self, metrics: list[str], modes: list[str], max_t: int, grace_period: int = 1,
                 reduction_factor: float = 2.0, time_attr: str = EPOCHS_COMPLETED, brackets: int = 1,
                 seed: int = 0) -> None:
        if not metrics or len(metrics) != len(modes):
            raise ValueError(f"need one mode per metric and at least one metric, got {metrics} and {modes}")
        if any(mode not in MODES for mode in modes):
            raise ValueError(f"modes must be 'min' or 'max', got {modes}")
        if max_t <= 0 or grace_period <= 0 or grace_period > max_t:
            raise ValueError(f"need 0 < grace_period <= max_t, got grace_period={grace_period}, max_t={max_t}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be above 1, got {reduction_factor}")
        if brackets < 1 or brackets > max_brackets(max_t, grace_period, reduction_factor):
            raise ValueError(f"brackets must be 1 to {max_brackets(max_t, grace_period, reduction_factor)}, "
                             f"got {brackets}")
        super().__init__()
        self._metrics = list(metrics)
        self._modes = list(modes)
        self._max_t = max_t
        self._reduction_factor = reduction_factor
        self._time_attr = time_attr
        self._brackets: list[list[tuple[float, dict[str, tuple[float, ...]]]]] = []
        """Per bracket, its rungs: highest milestone first, each with the vectors recorded
        there by trial id."""
        for s in range(brackets):
            milestones: list[float] = []
            while grace_period * reduction_factor ** (s + len(milestones)) < max_t:
                milestones.append(grace_period * reduction_factor ** (s + len(milestones)))
            self._brackets.append([(m, {}) for m in reversed(milestones)])
        sizes = [len(rungs) for rungs in self._brackets]
        self._weights = [math.e ** (size - max(sizes)) for size in sizes]
        self._random = random.Random(seed)
        self._bracket_of: dict[str, int] = {}
        self._num_stopped = 0

    @property
    def _rungs(self) -> list[tuple[float, dict[str, tuple[float, ...]]]]:
        return self._brackets[0]

    @property
    def milestones(self) -> list[float]:
        return self.bracket_milestones(0)

    def bracket_milestones(self, bracket: int) -> list[float]:
        return [milestone for milestone, _ in reversed(self._brackets[bracket])]

    def bracket_of(self, trial_id: str) -> int:
        """The trial's bracket, drawn when it is first seen."""
        if trial_id not in self._bracket_of:
            self._bracket_of[trial_id] = self._random.choices(range(len(self._brackets)), self._weights)[0] \
                if len(self._brackets) > 1 else 0
        return self._bracket_of[trial_id]

    def recorded(self, milestone: float, bracket: int = 0) -> dict[str, tuple[float, ...]]:
        """The minimized vectors recorded at a rung, by trial id."""
        return dict({m: r for m, r in self._brackets[bracket]}[milestone])

    def on_trial_add(self, tune_controller: TuneController | None, trial: Trial) -> None:
        self.bracket_of(trial.trial_id)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _reading(self, result: dict[str, Any]) -> tuple[float, tuple[float, ...]] | None:
        if result.get(self._time_attr) is None or any(result.get(m) is None for m in self._metrics):
            return None
        return result[self._time_attr], minimized(result, self._metrics, self._modes)

    def _judge(self, trial_id: str, t: float, vector: tuple[float, ...]) -> str:
        for milestone, recorded in self._brackets[self.bracket_of(trial_id)]:
            if t < milestone or trial_id in recorded:
                continue
            action = TrialScheduler.CONTINUE if promote(list(recorded.values()), vector,
                                                        self._reduction_factor) else TrialScheduler.STOP
            recorded[trial_id] = vector
            return action
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller: TuneController | None, trial: Trial, result: dict[str, Any]) -> str:
        reading = self._reading(result)
        if reading is None:
            return TrialScheduler.CONTINUE
        t, vector = reading
        action = TrialScheduler.STOP if t >= self._max_t else self._judge(trial.trial_id, t, vector)
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller: TuneController | None, trial: Trial, result: dict[str, Any]) -> None:
        """Records a last result that on_trial_result did not judge (as Ray's ASHA does)."""
        reading = self._reading(result)
        if reading is not None and reading[0] < self._max_t:
            self._judge(trial.trial_id, *reading)

    def debug_string(self) -> str:
        objectives = ", ".join(f"{m} ({mode})" for m, mode in zip(self._metrics, self._modes, strict=True))
        rungs = " || ".join(" | ".join(f"{self._time_attr} {m:g}: {len(r)} recorded" for m, r in reversed(rungs))
                            for rungs in self._brackets)
        return f"Using MultiObjectiveASHA on {objectives}: num_stopped={self._num_stopped}\n{rungs or 'no rungs'}"
