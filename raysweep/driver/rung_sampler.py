"""A sampler that learns from every rung a trial reached, not only from how it ended.

Under early stopping most trials end at a low rung (ASHA's first), and a plain TPE
sees them as PRUNED: ranked below every finished trial by how far they got, so what
it learns comes mostly from the few trials that ran to the end. BOHB's rule (Falkner
et al., 2018) fits the model instead on the highest budget that has enough
observations: here, the latest epoch that at least `min_trials` finished trials
(complete or pruned) reported a value at, each trial scored by its value at that
epoch. Early in a sweep that is the first rung, where every trial has a value; as
trials are promoted it moves up. Fewer than `min_trials` at every epoch: the study as
it is (the wrapped sampler's own start-up and rules).

Only Optuna's public API is used: each trial's `intermediate_values` (raysweep reports
every epoch's metric as one, step = epoch) and a view study built with `create_trial`,
in memory, that the wrapped TPE samples from. One objective only (Optuna keeps no
intermediate values for several).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def rung_of(trials: Sequence[FrozenTrial], min_trials: int) -> int | None:
    """The latest epoch (intermediate-value step) that at least `min_trials` of
    `trials` reported at; None when no epoch has that many."""
    counts: dict[int, int] = {}
    for trial in trials:
        for step in trial.intermediate_values:
            counts[step] = counts.get(step, 0) + 1
    reached = [step for step, count in counts.items() if count >= min_trials]
    return max(reached) if reached else None


def rung_view(study: optuna.Study, min_trials: int, current: FrozenTrial | None = None
              ) -> tuple[int | None, optuna.Study, FrozenTrial | None]:
    """(the rung, a study of the finished trials that reached it, each COMPLETE with its
    value there, `current`'s stand-in there); (None, `study`, `current`) when no rung
    has `min_trials` trials. The study's other running trials are in the view as
    RUNNING with their params (TPE's constant liar keeps new draws away from them)."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    rung = rung_of(trials, min_trials)
    if rung is None:
        return None, study, current
    view = optuna.create_study(directions=study.directions, storage=optuna.storages.InMemoryStorage())
    view.add_trials([optuna.trial.create_trial(
        params=t.params, distributions=t.distributions, value=t.intermediate_values[rung],
        system_attrs=t.system_attrs, user_attrs=t.user_attrs, state=TrialState.COMPLETE)
        for t in trials if rung in t.intermediate_values])
    view.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                               state=TrialState.RUNNING)
                     for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                     if current is None or t.number != current.number])
    if current is None:
        return rung, view, None
    view.add_trial(optuna.trial.create_trial(params=current.params, distributions=current.distributions,
                                             state=TrialState.RUNNING))
    return rung, view, view.get_trials(deepcopy=False)[-1]


class RungSampler(BaseSampler):
    """`make_inner(seed)`'s sampler (TPE), fitted on `rung_view` of the study.

    Until some epoch has `min_trials` finished trials (the start-up), `make_inner(seed)`
    draws from the study itself, so a sweep's first trials are the ones the plain
    sampler would draw. After that a fresh inner sampler serves each trial, seeded from
    (seed, trial number): its search-space caches then never mix views of different
    rungs, and a sweep draws the same params for the same history."""

    def __init__(self, make_inner: Callable[[int], BaseSampler], min_trials: int, seed: int = 0) -> None:
        self.make_inner, self.min_trials, self.seed = make_inner, max(1, min_trials), seed
        self.plain = make_inner(seed)
        self._for: tuple[int, BaseSampler, optuna.Study, FrozenTrial] | None = None
        self.rungs_used: dict[int, int | None] = {}
        """The rung each trial's params were drawn from (by trial number; None: the study as it is)."""

    def _serving(self, study: optuna.Study, trial: FrozenTrial) -> tuple[BaseSampler, optuna.Study, FrozenTrial]:
        if self._for is None or self._for[0] != trial.number:
            rung, view, stand_in = rung_view(study, self.min_trials, trial)
            assert stand_in is not None
            inner = self.plain if rung is None else self.make_inner((self.seed * 1_000_003 + trial.number) % 2**32)
            self._for = (trial.number, inner, view, stand_in)
            self.rungs_used[trial.number] = rung
        return self._for[1], self._for[2], self._for[3]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        inner, view, stand_in = self._serving(study, trial)
        return inner.infer_relative_search_space(view, stand_in)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        inner, view, stand_in = self._serving(study, trial)
        return inner.sample_relative(view, stand_in, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        inner, view, stand_in = self._serving(study, trial)
        return inner.sample_independent(view, stand_in, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self.seed = int.from_bytes(os.urandom(4), "little")
        self.plain.reseed_rng()
