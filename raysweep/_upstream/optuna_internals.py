"""Optuna and Ray Tune's OptunaSearch internals a sweep's searcher needs: the searcher's
map from Tune trials to Optuna trials, its study and sampler (a resumed sweep rebinds
them to the study in the journal), a live `optuna.Trial` for a stored one, and Optuna's
hypervolume for three or more objectives.

Why private: OptunaSearch keeps its study and trial map in private attributes and has
no way to take a study it did not create; Optuna exposes its hypervolume only inside
its samplers. Recheck on an upgrade: the pinned sources (OptunaSearch's
`_setup_study`, `suggest`, `on_trial_complete`; `optuna.Trial.__init__`;
`compute_hypervolume`), then tests/integration/test_sweep.py and the resume cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from raysweep._upstream import Pin

CHECKED = ("2.60.0", "2.61.0")  # (Ray; the pins below hold the Optuna sources)
PINS: list[Pin] = [  # (python -m raysweep._upstream prints the current digests)
    Pin('ray.tune.search.optuna.optuna_search:OptunaSearch._setup_study',
        '9794ccebd80d8f03'),
    Pin('ray.tune.search.optuna.optuna_search:OptunaSearch.suggest',
        '55eee52a9208b452'),
    Pin('ray.tune.search.optuna.optuna_search:OptunaSearch.on_trial_complete',
        '9c4cf49538985875'),
    Pin('optuna.trial._trial:Trial.__init__',
        '9aad18f8de35a8f7'),
    Pin('optuna._hypervolume:compute_hypervolume',
        '79347bc88ce35197'),
]


def searcher_knows(searcher: Any, trial_id: str) -> bool:
    """Whether OptunaSearch has an Optuna trial for Tune's `trial_id`."""
    return trial_id in searcher._ot_trials


def searcher_trial(searcher: Any, trial_id: str) -> Any:
    """The live Optuna trial of Tune's `trial_id` (KeyError when there is none)."""
    return searcher._ot_trials[trial_id]


def searcher_completed(searcher: Any, trial_id: str) -> bool:
    """Whether OptunaSearch has told the study that `trial_id` finished."""
    return trial_id in searcher._completed_trials


def searcher_study_name(searcher: Any) -> str:
    return searcher._study_name


def rebind_searcher(searcher: Any, study: Any, sampler: Any, trials: dict[str, Any], completed: set[str]) -> None:
    """Point OptunaSearch at `study` (with `sampler`), its Tune -> Optuna trial map and
    its finished trials."""
    searcher._sampler = study.sampler = sampler
    searcher._ot_study = study
    searcher._ot_trials = trials
    searcher._completed_trials = completed


def adopt_trial(searcher: Any, trial_id: str, trial: Any) -> None:
    """Make Tune's `trial_id` the live Optuna `trial` (OptunaSearch.suggest then returns
    that trial's params instead of asking the study for a new one)."""
    searcher._ot_trials[trial_id] = trial


def live_trial(study: Any, frozen: Any) -> Any:
    """An `optuna.Trial` of `study` for a stored (frozen) trial, to report to and tell."""
    import optuna

    return optuna.Trial(study, frozen._trial_id)


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Optuna's hypervolume (WFG) of `points` (minimized) against `reference`."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(np.asarray(points, dtype=float), np.asarray(reference, dtype=float)))
