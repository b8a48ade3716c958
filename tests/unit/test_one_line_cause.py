"""A failed trial's cause in one line (issue 17): the first failing rank's exception,
or the exit detail of a worker Ray destroyed, never "[Rank 1 Error Snippet]:"."""

from __future__ import annotations

from raysweep.errors import one_line_cause
from raysweep.run import root_cause

# A trial's error.txt as Ray 2.60 wrote it for a 2-worker run whose rank 1 raised
# (tests/integration/test_worker_groups.py makes the same failure for real).
WORKER_GROUP_ERROR = """Failure # 1 (occurred at 2026-11-27_20-09-12)
\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=13802, ip=127.0.0.1, actor_id=8a7d44b0, repr=func)
  File "/venv/lib/python3.11/site-packages/ray/train/v2/api/data_parallel_trainer.py", line 195, in fit
    raise result.error
ray.train.WorkerGroupError: Training failed due to worker errors:
[Rank 1 Error Snippet]:
\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=13802, ip=127.0.0.1, actor_id=8a7d44b0, repr=func)
  File "/work/main/raysweep/worker/entry.py", line 89, in _train
    train_fn(ctx)
  File "/work/main/raysweep/testing/probe.py", line 134, in train
    raise ValueError(f"planted failure on rank {ctx.rank}")
ValueError: planted failure on rank 1
"""

# Ray's ActorDiedError text (ray/exceptions.py) for a worker whose placement group was removed.
DESTROYED = """ray.train.WorkerGroupError: Training failed due to worker errors:
[Rank 0,1 Error Snippet]:
The actor died unexpectedly before finishing this task.
\tclass_name: RayTrainWorker
\tactor_id: 5e1f
\tpid: 4242
\tnamespace: 7c0e
\tip: 127.0.0.1
The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit detail: \
Destroying worker since its placement group was removed.
"""


def test_the_failing_ranks_exception() -> None:
    assert one_line_cause(WORKER_GROUP_ERROR) == "rank 1: ValueError: planted failure on rank 1"


def test_a_destroyed_worker_says_why() -> None:
    assert one_line_cause(DESTROYED) == ("ranks 0,1: worker destroyed: Destroying worker since its placement "
                                         "group was removed")


def test_the_first_of_several_ranks() -> None:
    two = WORKER_GROUP_ERROR + "[Rank 0 Error Snippet]:\nRuntimeError: gloo: connection reset\n"
    assert one_line_cause(two) == "rank 1: ValueError: planted failure on rank 1"


def test_a_plain_traceback_gives_its_innermost_exception() -> None:
    text = 'Traceback (most recent call last):\n  File "x.py", line 1\nKeyError: \'lr\'\n\nDuring handling...\n' \
           "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    assert one_line_cause(text) == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_a_run_failure_is_one_line() -> None:
    try:
        try:
            raise ValueError("planted")
        except ValueError as inner:
            raise RuntimeError(WORKER_GROUP_ERROR) from inner
    except RuntimeError as exc:
        assert root_cause(exc) == "ValueError: planted"
    assert root_cause(RuntimeError(WORKER_GROUP_ERROR)) == "rank 1: ValueError: planted failure on rank 1"
    assert "\n" not in one_line_cause("no exception here\njust text")


def test_root_cause_of_a_controller_error_is_the_controllers_own_exception():
    """Ray Train's ControllerError says only "Training failed due to controller
    error:"; the cause is the exception it holds (e.g. MLflow refusing the credentials
    of the Train controller's process)."""
    from ray.train.v2.api.exceptions import ControllerError

    class RestException(Exception):
        pass

    inner = RestException("API request to /api/2.0/mlflow/runs/log-batch failed with error code 401")
    assert root_cause(ControllerError(inner)) == (
        "RestException: API request to /api/2.0/mlflow/runs/log-batch failed with error code 401")


def _raised_in(module: str, message: str) -> BaseException:
    """A ValueError raised from a function of `module` (as a trainer module raises it)."""
    namespace = {"__name__": module}
    exec(compile(f"def train():\n    raise ValueError({message!r})\n", f"/somewhere/{module}.py", "exec"), namespace)
    try:
        namespace["train"]()
    except ValueError as exc:
        return exc
    raise AssertionError("not raised")


def test_a_trainers_exception_carries_its_rank_and_frame_through_rays_wrappers():
    """The worker attaches the Cause (errors.note_cause); the driver finds it inside the
    exceptions Ray wraps round it, after a pickle round trip as Ray sends them."""
    from ray import cloudpickle
    from ray.exceptions import RayTaskError
    from ray.train.v2.api.exceptions import WorkerGroupError

    from raysweep.errors import cause_of, note_cause

    rank1, rank0 = _raised_in("trainers.mlp", "planted failure on rank 1"), _raised_in("trainers.mlp", "rank 0 too")
    note_cause(rank1, 1, 2, "trainers.mlp")
    note_cause(rank0, 0, 2, "trainers.mlp")
    note_cause(rank0, 5, 9, "elsewhere")  # (the innermost rank's cause stays)
    group = WorkerGroupError("2 workers failed", {1: rank1, 0: rank0})
    wrapped = cloudpickle.loads(cloudpickle.dumps(RayTaskError("train_fn", "traceback text", group)))
    assert cause_of(wrapped).line() == "rank 0: ValueError: rank 0 too (at trainers.mlp:2 in train)"
    only_one = cloudpickle.loads(cloudpickle.dumps(RayTaskError("t", "tb", WorkerGroupError("x", {1: rank1}))))
    assert cause_of(only_one).line() == "rank 1: ValueError: planted failure on rank 1 (at trainers.mlp:2 in train)"
    assert root_cause(RuntimeError("the run failed")) == "RuntimeError: the run failed"  # (no cause: Ray's text)


def test_a_one_worker_cause_names_no_rank_and_a_frame_only_from_the_trainer():
    from raysweep.errors import Cause, cause_of, note_cause

    exc = _raised_in("helpers.io", "disk gone")
    note_cause(exc, 0, 1, "trainers.mlp")  # (raised outside the trainer's module: no frame to name)
    assert cause_of(exc) == Cause(0, 1, "ValueError", "disk gone", "")
    assert cause_of(exc).line() == "ValueError: disk gone"


def test_an_error_raised_from_none_is_read_from_its_text_not_from_its_context():
    """The warm group's rank 0 re-raises a worker's failure as text `from None` while
    its own secondary error (a broken collective) carries a cause: the text wins."""
    from raysweep.errors import cause_of, note_cause

    secondary = _raised_in("trainers.mlp", "connection closed by peer")
    note_cause(secondary, 0, 2, "trainers.mlp")
    try:
        try:
            raise secondary
        except ValueError:
            raise RuntimeError(WORKER_GROUP_ERROR) from None
    except RuntimeError as outer:
        assert cause_of(outer) is None
        assert root_cause(outer) == "rank 1: ValueError: planted failure on rank 1"
