"""How a warm group's trial fails (raysweep.worker.warm_group.RankFailure), without Ray
running: a worker rank whose node was taken away under a drain notice fails the trial
with Ray's own preempted actor error, which Tune counts as no failure."""

from __future__ import annotations

import pickle

import pytest
from ray.exceptions import RayActorError, RayTaskError

from raysweep.errors import CAUSE_ATTR, Cause
from raysweep.worker.warm_group import RankFailure, WarmGroupError


def _actor_error(preempted: bool) -> RayActorError:
    return RayActorError(actor_id=None, error_msg="the actor died", actor_init_failed=False, preempted=preempted)


def test_a_preempted_worker_fails_the_trial_with_its_own_actor_error() -> None:
    died = _actor_error(preempted=True)
    error = RankFailure("[Rank 1 Error Snippet]: RayActorError: the actor died", preempted=died).error()
    assert error is died
    # What Tune sees of it, raised in the trial's process: a task error whose cause is
    # a preempted actor error (ray.tune.experiment.trial.Trial._handle_ray_task_error).
    try:
        raise error
    except RayActorError as exc:
        sent = pickle.loads(pickle.dumps(RayTaskError("train", "traceback", exc)))  # (to the driver)
    seen = sent.as_instanceof_cause()
    assert isinstance(seen, RayActorError) and seen.preempted


def test_any_other_failure_is_a_warm_group_error_with_the_ranks_cause() -> None:
    cause = Cause(1, 2, "ValueError", "bad", "trainers.x:3 in train")
    error = RankFailure("[Rank 1 Error Snippet]: ValueError: bad", cause).error()
    assert isinstance(error, WarmGroupError) and getattr(error, CAUSE_ATTR) == cause
    assert isinstance(RankFailure("[Rank 1 Error Snippet]: died").error(), WarmGroupError)
    with pytest.raises(WarmGroupError):
        raise RankFailure("x", preempted=None).error()
