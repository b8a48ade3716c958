"""Tune's failure accounting, fixed for a trial actor that dies while Tune reuses it
(`reuse_actors`, a sweep's one-worker trials): one death, one failure.

Why private: the double count is inside TuneController's and the actor manager's
callbacks (no bug report upstream yet; the finding: docs/shared-nothing.md). Recheck on
an upgrade: whether `RayActorManager._actor_task_failed` still hands one RayActorError
to both the actor's and the task's error callback, and `TuneController._actor_failed`
still processes a PENDING trial's failure; tests/integration/test_tune_failures.py
fails when the fix is needed and missing.
"""

from __future__ import annotations

import logging
from typing import Any

from raysweep._upstream import Pin

CHECKED = ("2.60.0", "2.61.0")
PINS: list[Pin] = [  # (python -m raysweep._upstream prints the current digests)
    Pin('ray.air.execution._internal.actor_manager:RayActorManager._actor_task_failed', '506864f951d841e2'),
    Pin('ray.tune.execution.tune_controller:TuneController._actor_failed', 'a61f784145549210'),
    Pin('ray.tune.execution.tune_controller:TuneController._trial_task_failure', '7f0662512e60d9da'),
    Pin('ray.tune.execution.tune_controller:TuneController._schedule_trial_reset', 'bf33318470859b32'),
    Pin('ray.tune.execution.tune_controller:TuneController._maybe_reuse_cached_actor', '4c3099edac149320'),
]


def one_failure_per_actor_death() -> None:
    """Make Tune count a trial actor's death once, also when it dies while being reused.

    With `reuse_actors` (a sweep's one-worker trials), a new trial takes a finished
    trial's actor and Tune runs `reset` on it while the trial is still PENDING. When
    that actor dies then (its node cut off or lost), Ray's actor manager hands the one
    RayActorError to two callbacks (`ActorManager._actor_task_failed`): the actor's
    (`TuneController._actor_failed`, which processes a failure for a PENDING trial:
    one failure counted, the trial requeued) and the `reset` task's (which processes it
    again: a second failure counted, and the trial, PENDING now, is errored whatever
    `failure.max_failures` says). The trial also stayed in `_resetting_trials`, so it
    would never get an actor again. Seen in tests/faults/test_cross_host.py (a worker
    host cut off): one node loss failed a trial that max_failures=1 should have
    retried. Now one exception is processed once per trial, and a trial whose actor
    died leaves `_resetting_trials`. Idempotent (patches the class once per process)."""
    from ray.tune.execution.tune_controller import TuneController

    original_failure, original_actor_failed = TuneController._trial_task_failure, TuneController._actor_failed
    if getattr(original_failure, "_raysweep_once", False):
        return

    def _trial_task_failure(self: Any, trial: Any, exception: Exception) -> None:
        seen = exception.__dict__.setdefault("_raysweep_processed_for", set())
        if trial.trial_id in seen:
            logging.getLogger(__name__).debug("trial %s: %r already processed", trial, exception)
            return
        seen.add(trial.trial_id)
        original_failure(self, trial, exception)

    def _actor_failed(self: Any, tracked_actor: Any, exception: Exception) -> None:
        trial = self._actor_to_trial.get(tracked_actor)
        if trial is not None:
            self._resetting_trials.discard(trial)
        original_actor_failed(self, tracked_actor, exception)

    _trial_task_failure._raysweep_once = True  # type: ignore[attr-defined]
    _trial_task_failure._raysweep_original = original_failure  # type: ignore[attr-defined]
    _actor_failed._raysweep_original = original_actor_failed  # type: ignore[attr-defined]
    TuneController._trial_task_failure = _trial_task_failure  # type: ignore[method-assign]
    TuneController._actor_failed = _actor_failed  # type: ignore[method-assign]
