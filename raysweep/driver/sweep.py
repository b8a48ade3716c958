"""Driver side of a sweep: Optuna suggests, Ray Tune runs trials, the scheduler stops weak ones.

Train V2 pattern: `Tuner(trial_function)`. How a trial trains is its
`ExecutionMode`, and each mode has one `TrialStrategy`: the trial function, the
resources the trial asks Tune for, who retries a failure, whether Tune reuses the
trial's process. Tune does not count Train's workers, so the concurrency is
derived from the cluster's CPUs/GPUs (`max_concurrent_trials`), before any run.
"""

from __future__ import annotations

import functools
import os
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
import ray.cloudpickle as cloudpickle
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from raysweep._ray_compat import set_ray_env_defaults
from raysweep._upstream.optuna_internals import (
    adopt_trial,
    live_trial,
    rebind_searcher,
    searcher_completed,
    searcher_knows,
    searcher_study_name,
    searcher_trial,
)
from raysweep._upstream.tune_failures import one_failure_per_actor_death
from raysweep.config.constraints import Constraint, violations
from raysweep.config.space import search_space, to_optuna_space
from raysweep.config.spec import SamplerSpec, SchedulerSpec, Spec, max_brackets
from raysweep.data.storage import is_object_store, run_storage, uri_of
from raysweep.driver.mo_asha import MultiObjectiveASHA
from raysweep.driver.rung_sampler import RungSampler
from raysweep.driver.trial import RESUME_KEY, run_in_trial, run_warm_group, run_worker_group, trial_identity
from raysweep.errors import STORAGE_FULL, UserInputError, cause_of, one_line_cause
from raysweep.report import EPOCHS_COMPLETED
from raysweep.tracking.callbacks import SweepTracker
from raysweep.tracking.study import (
    RUNG_ATTR,
    TUNE_TRIAL_ATTR,
    fail_stale_trials,
    push_study,
    seed_study,
    study_dir,
    study_storage,
)
from raysweep.tracking.trials import TrialState
from raysweep.worker.plan import ExecutionMode, RunPlan
from raysweep.worker.warm_group import resources as warm_group_resources

TUNE_DIR = "tune"
# A worker-group trial's function only waits on its TorchTrainer: it takes no CPU
# (Train's workers do). Tune refuses an empty request, so it reserves a little memory.
TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 1024**2}


@dataclass(frozen=True)
class TrialStrategy:
    """How trials of one ExecutionMode run under Tune."""

    run: Callable[..., None]
    """The Tune function trainable."""
    trial_is_worker: bool
    """True: the trial's own process trains, so it asks Tune for the worker's CPUs
    and GPU, Tune reuses the warm process for the next trial and retries a failure
    from the trial's checkpoint. False: the trial only drives a Train worker group,
    which holds its own resources and retries inside Train."""

    def resources(self, plan: RunPlan) -> Any:
        """What the trial asks Tune for: a dict, or (a warm group) a placement group factory."""
        if plan.placement.mode is ExecutionMode.WARM_GROUP:
            return warm_group_resources(plan)
        if self.trial_is_worker:
            return {"GPU": 0.0, **plan.placement.worker_resources()}
        return dict(TRIAL_DRIVER_RESOURCES)


STRATEGIES = {
    ExecutionMode.IN_TRIAL: TrialStrategy(run_in_trial, trial_is_worker=True),
    ExecutionMode.WARM_GROUP: TrialStrategy(run_warm_group, trial_is_worker=True),
    ExecutionMode.WORKER_GROUP: TrialStrategy(run_worker_group, trial_is_worker=False),
}


class _OptunaSearch(OptunaSearch):
    """OptunaSearch on the sweep's journal.

    Every epoch's metric reaches the study as an intermediate value (step = epoch); a
    trial the scheduler stopped before `max_epochs` is told PRUNED, not COMPLETE with
    its last value (TPE then ranks it by its learning curve, below finished trials); an
    errored trial is FAIL even if it reported before. Each Optuna trial is tagged with
    its raysweep trial id (the Tune trial id of its first run).

    A resumed sweep's searcher comes from the journal alone (`from_journal`): the trials
    the journal holds as RUNNING (lost with the earlier driver, or stopped by a budget)
    are handed out first, each under the Tune trial id it gets in this run, with its
    params, its raysweep id and the checkpoint to continue from (`trial.RESUME_KEY`);
    then new ones are asked of the study.

    The journal is what a resume trusts, so MLflow is never let fall far behind it:
    `before_journal` (the sweep's MLflow flush) runs before a trial enters the journal
    and before its end is told. (Written behind, MLflow lagged a fast sweep by whole
    trials: a head lost then left trials the journal held as finished with no MLflow
    run, and a resume could not bring them back.)
    """

    def __init__(self, *args: Any, journal_dir: str, sampler_spec: SamplerSpec, max_epochs: int,
                 constraints: Sequence[Constraint] = (), sweep_dir: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.journal_dir, self.sampler_spec, self.max_epochs = journal_dir, sampler_spec, max_epochs
        self.drawing: optuna.samplers.BaseSampler | None = kwargs.get("sampler")
        """The sampler the study draws with (from_journal replaces it)."""
        self.sweep_dir = sweep_dir
        self.constraints = tuple(constraints)
        self._reported: dict[str, int] = {}
        self._last: dict[str, dict] = {}
        self.to_continue: list[tuple[str | None, Any]] = []
        """(raysweep trial id or None: never tagged, the journal's trial) of each trial
        a resumed sweep continues, in the order they started."""
        self.checkpoints: dict[str, str | None] = {}
        """The checkpoint each continued trial goes on from (by raysweep trial id)."""
        self.finished: dict[str, optuna.trial.TrialState] = {}
        """This sweep's trials the journal holds as finished (by raysweep trial id)."""
        self.before_journal: Callable[[], Any] = lambda: None
        self.may_start: Callable[[], bool] = lambda: True
        """False: no new trial (budget.total_epochs spent): the search is over."""

    def save(self, checkpoint_path: str) -> None:
        """Tune's snapshot of the searcher: never read (a resume rebuilds the searcher
        from the journal), so nothing of it is pickled at each of Tune's steps."""
        with open(checkpoint_path, "wb") as handle:
            cloudpickle.dump({}, handle)

    def suggest(self, trial_id: str) -> dict | None:
        if not searcher_knows(self, trial_id) and self.to_continue:
            return self._continue(trial_id)
        new = not searcher_knows(self, trial_id)
        if new and not self.may_start():
            return Searcher.FINISHED  # type: ignore[return-value]  # (Tune reads this string as "the search is over")
        if new:
            self.before_journal()
        config = super().suggest(trial_id)
        if new and searcher_knows(self, trial_id):
            trial = searcher_trial(self, trial_id)
            trial.set_user_attr(TUNE_TRIAL_ATTR, trial_id)
            if isinstance(self.drawing, RungSampler):  # (which epoch's values its params were drawn from)
                trial.set_user_attr(RUNG_ATTR, self.drawing.rungs_used.get(trial.number))
            # The bucket's journal gets the trial before Tune starts it (a driver lost in
            # between left a trial that a resumed sweep would not know).
            push_study(getattr(self, "sweep_dir", ""), searcher_study_name(self))
        return config

    def _continue(self, trial_id: str) -> dict | None:
        """Tune's new `trial_id` is the next trial an earlier driver left unfinished."""
        raysweep_id, frozen = self.to_continue.pop(0)
        adopt_trial(self, trial_id, live_trial(self.journal_study, frozen))
        if raysweep_id is None:
            raysweep_id = trial_id
            searcher_trial(self, trial_id).set_user_attr(TUNE_TRIAL_ATTR, trial_id)
            push_study(self.sweep_dir, searcher_study_name(self))
        if frozen.intermediate_values:  # (epochs the study has: not reported to it again)
            self._reported[trial_id] = max(frozen.intermediate_values)
        config = super().suggest(trial_id)
        return None if config is None else {
            **config, RESUME_KEY: {"trial_id": raysweep_id, "checkpoint": self.checkpoints.get(raysweep_id)}}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not searcher_knows(self, trial_id):
            return
        self.before_journal()
        if result is not None and not error:  # (Tune passes a trial's last result here, not to on_trial_result)
            self.on_trial_result(trial_id, result)
        stopped_early = result is not None and int(result.get(EPOCHS_COMPLETED, self.max_epochs)) < self.max_epochs
        if self.constraints and not searcher_completed(self, trial_id):
            # The samplers read a trial's constraints (<= 0: met) from the study (Optuna 5's
            # Trial.set_constraint): the last epoch's; a metric never reported counts as far outside.
            trial, last = searcher_trial(self, trial_id), self._last.get(trial_id, {})
            for constraint, violation in zip(self.constraints, violations(self.constraints, last), strict=True):
                trial.set_constraint(str(constraint), min(violation, MAX_VIOLATION))
        # (no result: OptunaSearch tells FAIL when errored, else PRUNED)
        super().on_trial_complete(trial_id, None if error or stopped_early else result, error)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Mid-epoch checkpoint reports carry no metric; Tune's training_iteration counts
        # them too, so the step is the epoch. Several objectives: Optuna keeps no
        # intermediate values (its multi-objective studies take none).
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if all(m in result for m in metrics):
            self._last[trial_id] = result
        if isinstance(self.metric, list) or not searcher_knows(self, trial_id):
            return
        if self.metric in result and "epoch" in result and not searcher_completed(self, trial_id):
            trial, epoch = searcher_trial(self, trial_id), int(result["epoch"])
            if self._reported.get(trial_id, -1) < epoch:  # (a finished trial's last result comes twice)
                trial.report(float(result[self.metric]), epoch)
                self._reported[trial_id] = epoch

    def from_journal(self, checkpoints: dict[str, str | None] | None = None) -> None:
        """The study from the journal, its unfinished trials to continue (from
        `checkpoints`, by raysweep trial id), the sampler reseeded from (seed, trials
        in the study), so it never replays the draws an earlier driver made."""
        study = optuna.load_study(study_name=searcher_study_name(self), storage=study_storage(self.journal_dir))
        known = study.get_trials(deepcopy=False)
        self.journal_study = study
        self.drawing = make_sampler(self.sampler_spec, seed_offset=len(known))
        rebind_searcher(self, study, self.drawing, trials={}, completed=set())
        running = optuna.trial.TrialState.RUNNING
        self.to_continue = [(t.user_attrs.get(TUNE_TRIAL_ATTR), t) for t in known if t.state == running]
        self.finished = {t.user_attrs[TUNE_TRIAL_ATTR]: t.state for t in known
                         if TUNE_TRIAL_ATTR in t.user_attrs and t.state.is_finished()}
        self.checkpoints = dict(checkpoints or {})


def make_searcher(spec: Spec, sweep_dir: str, resume: bool = False,
                  checkpoints: dict[str, str | None] | None = None) -> _OptunaSearch:
    """Ray Tune's OptunaSearch over the spec's space, on the sweep's durable study
    (`resume`: rebuilt from the study's journal, its unfinished trials continued from
    `checkpoints`)."""
    searcher = _OptunaSearch(
        space=search_space(spec),
        metric=spec.scheduler.metric,
        mode=spec.scheduler.mode,
        sampler=make_sampler(spec.sampler),
        study_name=spec.name,
        storage=study_storage(study_dir(sweep_dir, spec.name)),
        journal_dir=study_dir(sweep_dir, spec.name),
        sampler_spec=spec.sampler,
        max_epochs=spec.scheduler.max_epochs,
        constraints=spec.parsed_constraints(),
        sweep_dir=sweep_dir,
    )
    if resume:
        searcher.from_journal(checkpoints)
    return searcher


MAX_VIOLATION = 1e12
"""A constraint on a metric the trial never reported: far outside, finite (the GP sampler fits them)."""


def make_sampler(sampler: SamplerSpec, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler; `seed_offset` (a resumed sweep's trial count) moves its seed;
    `sampler.rungs` (tpe only): fitted on every rung's values (RungSampler).
    (Constraints reach it through each trial's constraint values, see _OptunaSearch.)"""
    seed = sampler.seed + seed_offset
    startup = sampler.n_startup_trials
    if sampler.rungs:  # (tpe only: the spec refuses it for other samplers)
        def tpe(inner_seed: int) -> optuna.samplers.BaseSampler:
            return make_sampler(sampler.model_copy(update={"seed": inner_seed, "rungs": False}))

        return RungSampler(tpe, min_trials=10 if startup is None else startup, seed=seed)
    with warnings.catch_warnings():  # (GPSampler, multivariate TPE and group are "experimental" in Optuna)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if sampler.type == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if sampler.type == "gp":
            return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False,
                                             n_startup_trials=10 if startup is None else startup)
        if sampler.type == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False,
                                                n_startup_trials=1 if startup is None else startup)
        if sampler.type == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=sampler.population_size or 50)
        return optuna.samplers.TPESampler(seed=seed, multivariate=sampler.multivariate, group=sampler.group,
                                          n_startup_trials=10 if startup is None else startup)


def make_scheduler(scheduler: SchedulerSpec, seed: int = 0) -> TrialScheduler:
    if scheduler.type == "fifo":
        return FIFOScheduler()
    if scheduler.type == "hyperband":  # (one objective or several: raysweep's own, seeded brackets)
        brackets = scheduler.brackets or max_brackets(scheduler.max_epochs, scheduler.grace_period,
                                                      scheduler.reduction_factor)
        return MultiObjectiveASHA(scheduler.metrics, scheduler.modes, max_t=scheduler.max_epochs,
                                  grace_period=scheduler.grace_period, reduction_factor=scheduler.reduction_factor,
                                  brackets=brackets, seed=seed)
    if scheduler.multi_objective:
        return MultiObjectiveASHA(scheduler.metrics, scheduler.modes, max_t=scheduler.max_epochs,
                                  grace_period=scheduler.grace_period, reduction_factor=scheduler.reduction_factor)
    return ASHAScheduler(
        time_attr=EPOCHS_COMPLETED,
        metric=scheduler.primary,
        mode=scheduler.primary_mode,
        max_t=scheduler.max_epochs,
        grace_period=scheduler.grace_period,
        reduction_factor=scheduler.reduction_factor,
    )


def find_sweep_to_resume(root: str, name: str, sweep_id: str | None) -> str:
    """The sweep id to resume: the one given, else the newest sweep of this spec
    with Tune state under the experiment's run folder (local, or s3:// / gs://)."""
    import pyarrow.fs as pafs

    from raysweep.data.storage import filesystem

    fs, base = filesystem(root)
    try:
        found = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except OSError as exc:
        raise UserInputError(f"{root}: cannot list the sweeps to resume: {exc}") from None
    names = [f.base_name for f in found if f.type == pafs.FileType.Directory and f.base_name.startswith(f"{name}-")]
    candidates = sorted(n for n in names
                        if fs.get_file_info(f"{base.rstrip('/')}/{n}/{TUNE_DIR}").type == pafs.FileType.Directory)
    if sweep_id is None and candidates:
        return candidates[-1]
    if sweep_id is not None and sweep_id in candidates:
        return sweep_id
    known = ", ".join(candidates[-5:]) or "none"
    raise UserInputError(f"{root}: no sweep {sweep_id or name + '-*'} with Tune state to resume (found: {known})")


class TrackerCallback(tune.Callback):
    """Forwards Tune's trial events to the (Ray-free) SweepTracker, under each trial's
    raysweep id and with its params (a continued trial's config also says where it
    continues from: trial.RESUME_KEY). `scheme` ("s3://", "gs://" or ""): the sweep
    storage's, put back on the checkpoint paths Ray reports (a path inside its
    filesystem: Train's `checkpoint_path` has no scheme)."""

    def __init__(self, tracker: SweepTracker, scheme: str = "") -> None:
        self.tracker = tracker
        self.scheme = scheme
        self._failures: dict[str, int] = {}  # Tune trial id -> Tune's failure count when last seen

    @staticmethod
    def _trial(trial: Any) -> tuple[str, dict[str, Any]]:
        trial_id, params, _ = trial_identity(trial.config, trial.trial_id)
        return trial_id, params

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.tracker.printer.tick()  # (a terminal's live line: elapsed time moves on between events)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failures[trial.trial_id] = int(trial.num_failures)
        self.tracker.trial_started(*self._trial(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        path = result.get("checkpoint_path")
        if self.scheme and isinstance(path, str) and "://" not in path:
            result = {**result, "checkpoint_path": self.scheme + path.lstrip("/")}
        self.tracker.trial_result(*self._trial(trial), result)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        """A checkpoint Tune has stored (in-trial and warm-group trials): the one a
        resumed sweep continues the trial from."""
        self.tracker.trial_checkpoint(*self._trial(trial), uri_of(checkpoint.filesystem, checkpoint.path))
        # Sent before Tune registers it, which may delete an older one (CheckpointConfig.
        # num_to_keep): MLflow never names a checkpoint that is gone.
        self.tracker.writer.flush()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        checkpoint = getattr(trial, "checkpoint", None)  # in-trial runs checkpoint through Tune
        path = uri_of(checkpoint.filesystem, checkpoint.path) if checkpoint else None
        self.tracker.trial_completed(*self._trial(trial), path)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.trial_failed(*self._trial(trial), error_summary(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial Tune runs again: after a failure (failure.max_failures), or after its
        node was taken away under a drain notice, which Tune does not count as one
        (its actor's RayActorError.preempted): said, with its cause."""
        failures, cause = int(trial.num_failures), error_summary(trial)
        if failures > self._failures.get(trial.trial_id, 0):
            self.tracker.trial_retried(*self._trial(trial), failures, cause)
        else:
            self.tracker.trial_preempted(*self._trial(trial), cause)
        self._failures[trial.trial_id] = failures


class StudyMirror(tune.Callback):
    """A sweep on object storage: its Optuna journal copied up beside the sweep at every
    trial event, results included (the searcher writes each epoch's value to it, and
    Tune's own state in the bucket, synced as often, may refer to them; see
    raysweep.tracking.study.push_study)."""

    def __init__(self, sweep_dir: str, study_name: str) -> None:
        self.sweep_dir, self.study_name = sweep_dir, study_name

    def _push(self, *args: Any, **info: Any) -> None:
        push_study(self.sweep_dir, self.study_name)

    on_trial_start = on_trial_result = on_trial_complete = on_trial_error = _push


class SweepBudget(tune.Callback):
    """Stops the sweep when its budget is spent (budget.max_hours of this driver's run,
    budget.max_failed_trials, max_gpu_hours, total_epochs with trials still running) or
    a trial waited scaling.pending_timeout_s to be placed, the way Tune stops on an
    interrupt: Tune's own SIGUSR1 handler ends the run after the current step, the
    running trials keep their latest checkpoints and stay RUNNING in the journal, so
    `--resume` continues them (Tune's `Stopper.stop_all` would instead end them as
    finished). An epoch budget spent with no trial running ends the sweep as done:
    the searcher asks for no new trial once it is spent (`may_start`)."""

    def __init__(self, max_hours: float | None, max_failed: int | None, failed: Callable[[], int],
                 pending_timeout_s: float | None = None, max_gpu_hours: float | None = None,
                 gpu_hours: Callable[[], float] = lambda: 0.0, total_epochs: int | None = None,
                 epochs: Callable[[], int] = lambda: 0, max_epochs: int = 0) -> None:
        self.max_hours, self.max_failed, self.failed = max_hours, max_failed, failed
        self.max_gpu_hours, self.gpu_hours = max_gpu_hours, gpu_hours
        self.total_epochs, self.epochs, self.max_epochs = total_epochs, epochs, max_epochs
        self.deadline = None if max_hours is None else time.monotonic() + max_hours * 3600
        self.pending_timeout_s = pending_timeout_s
        self.pending_since: dict[str, float] = {}
        self.reason: str | None = None

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.reason is not None:
            return
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self._stop(f"budget.max_hours ({self.max_hours:g} h) reached")
        elif self.max_failed is not None and self.failed() >= self.max_failed:
            self._stop(f"budget.max_failed_trials ({self.max_failed}) reached")
        elif self.max_gpu_hours is not None and self.gpu_hours() >= self.max_gpu_hours:
            self._stop(f"budget.max_gpu_hours ({self.max_gpu_hours:g} GPU-hours) reached")
        elif not self.may_start() and any(t.status in ("RUNNING", "PENDING", "PAUSED") and
                                          int(t.last_result.get(EPOCHS_COMPLETED, 0)) < self.max_epochs
                                          for t in trials):  # (a trial past its last epoch is ending)
            self._stop(f"budget.total_epochs ({self.total_epochs}) spent")
        elif self.pending_timeout_s is not None:
            late = self._waited_too_long(trials)
            if late is not None:
                self._stop(late)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial that could not write for lack of space: every trial after it would fail
        the same way, so the sweep stops at once (resumable, once there is room)."""
        cause = error_summary(trial)
        if self.reason is None and is_disk_full(cause):
            self._stop(f"{STORAGE_FULL}: trial {trial.trial_id} could not write ({cause}); free space where the sweep "
                       "writes (storage_path, the Ray and raysweep temp folders)")

    def may_start(self) -> bool:
        """Whether a new trial may start (the epoch budget is not spent)."""
        return self.total_epochs is None or self.epochs() < self.total_epochs

    def _waited_too_long(self, trials: list) -> str | None:
        """Why the sweep stops for a trial that could not be placed in time, or None."""
        now = time.monotonic()
        pending = {t.trial_id: t for t in trials if t.status == "PENDING"}
        self.pending_since = {tid: self.pending_since.get(tid, now) for tid in pending}
        assert self.pending_timeout_s is not None
        for tid, since in self.pending_since.items():
            if now - since >= self.pending_timeout_s:
                return (f"scaling.pending_timeout_s ({self.pending_timeout_s:g} s): trial {tid} could not be placed: "
                        f"it asks for {_amounts(pending[tid].placement_group_factory.required_resources)}; "
                        f"the cluster has {_free_of_total()}")
        return None

    def _stop(self, reason: str) -> None:
        self.reason = reason
        if callable(signal.getsignal(signal.SIGUSR1)):  # (Tune's handler: set in the thread that runs it)
            os.kill(os.getpid(), signal.SIGUSR1)
        else:
            warnings.warn(f"{reason}, but Tune's interrupt handler is not set in this process: the sweep "
                          "runs on", stacklevel=1)


def is_disk_full(cause: str) -> bool:
    """Whether a trial's one-line cause is a write that found no space (ENOSPC)."""
    return "[Errno 28]" in cause or "No space left on device" in cause


def _amounts(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items()) if v) + "}"


def _free_of_total() -> str:
    """What the cluster has free of what it has, per resource (memory and object store
    left out): `CPU 0 free of 2, GPU ...`."""
    total, free = ray.cluster_resources(), ray.available_resources()
    names = sorted(k for k in total if k not in ("memory", "object_store_memory") and not k.startswith("node:")
                   and "_group_" not in k)  # (a placement group's own resources)
    return ", ".join(f"{k} {free.get(k, 0):g} free of {total[k]:g}" for k in names)


def error_summary(trial: Any) -> str:
    """A trial's root cause in one line, not a traceback: the trainer's exception as its
    rank saw it (errors.cause_of, from the exception Tune pickled), else read from Tune's
    error text (errors.one_line_cause: a process Ray killed raised nothing of raysweep's)."""
    pickled = getattr(trial, "pickled_error_file", None)
    if pickled and os.path.exists(pickled):
        try:
            with open(pickled, "rb") as f:
                cause = cause_of(cloudpickle.load(f))
        except Exception:  # noqa: BLE001  (an error that does not unpickle here: its text)
            cause = None
        if cause is not None:
            return cause.line()
    error_file = getattr(trial, "error_file", None)
    text = Path(error_file).read_text(errors="replace") if error_file and os.path.exists(error_file) else ""
    return one_line_cause(text) if text.strip() else "unknown error"


def close_finished(tracker: SweepTracker, finished: dict[str, optuna.trial.TrialState]) -> None:
    """A resumed sweep: the trials the journal holds as finished whose MLflow run an
    earlier driver did not get to close (lost between telling Optuna and writing to
    MLflow) are closed as the journal says."""
    for trial_id, state in finished.items():
        record = tracker.trials.get(trial_id)
        if record is None or record.state is not TrialState.RUNNING:
            continue
        if state == optuna.trial.TrialState.FAIL:
            tracker.trial_failed(trial_id, record.params, "lost with an earlier driver of this sweep")
        else:
            tracker.trial_completed(trial_id, record.params, record.checkpoint)


@dataclass
class SweepOutcome:
    sweep_id: str
    sweep_dir: str
    tracker: SweepTracker
    wall_s: float
    stopped_by: str | None = None
    """The budget that stopped the sweep (its unfinished trials continue on --resume)."""


def run_sweep(spec: Spec, plan: RunPlan, sweep_id: str, tracker: SweepTracker, concurrency: int,
              driver_resources: dict[str, float] | None = None, resume: bool = False) -> SweepOutcome:
    """Run the whole sweep; trials that fail are recorded, not raised.

    `driver_resources` (the profile's trial_driver_resources, e.g. {"on_demand": 0.01})
    pins each trial's function, and with it Train's controller, to nodes that have them.
    `resume` continues the sweep in `sweep_id` from its Optuna journal and its MLflow
    runs, in a new Tuner (Tune's own stored state is not read): finished trials are
    not run again, unfinished ones continue from the checkpoint their run names, and
    the searcher (with its Optuna study) picks up where it was.
    """
    set_ray_env_defaults()
    one_failure_per_actor_death()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep_dir = f"{plan.storage_path}/{sweep_id}"
    strategy = STRATEGIES[plan.placement.mode]
    function = functools.partial(strategy.run, plan=plan, trials_dir=f"{sweep_dir}/trials")
    resources = strategy.resources(plan)
    if isinstance(resources, dict):  # (a warm group's placement group has no driver resources: see execution_mode)
        resources = {**resources, **(driver_resources or {})}
    trainable = tune.with_resources(function, resources)
    scheme = sweep_dir.split("://", 1)[0] + "://" if is_object_store(sweep_dir) else ""
    callbacks: list[tune.Callback] = [TrackerCallback(tracker, scheme)]
    budget = SweepBudget(spec.budget.max_hours, spec.budget.max_failed_trials,
                         lambda: len(tracker.state.in_state(TrialState.FAILED)), spec.scaling.pending_timeout_s,
                         spec.budget.max_gpu_hours, lambda: tracker.state.resource_hours(plan.placement.num_workers *
                                                                                          plan.placement.gpus_per_worker),
                         spec.budget.total_epochs, tracker.state.epochs_spent, spec.scheduler.max_epochs)
    callbacks.append(budget)
    if "://" in sweep_dir:
        callbacks.append(StudyMirror(sweep_dir, spec.name))
    num_samples = spec.budget.num_trials or -1  # (-1: no cap, a resource budget ends the sweep)
    if resume:
        # (the bucket's journal, on a driver that lost or never had its copy, was fetched and
        # checked before Ray started: run.resume_target -> tracking.study.check_journal)
        searcher = make_searcher(spec, sweep_dir, resume=True,
                                 checkpoints={tid: r.checkpoint for tid, r in tracker.trials.items()})
        close_finished(tracker, searcher.finished)
        if spec.budget.num_trials is not None:
            num_samples = max(0, num_samples - len(searcher.finished))
        going_on = [tid or "(untagged)" for tid, _ in searcher.to_continue]
        print(f"journal: {len(searcher.finished)} trial(s) finished, {len(going_on)} to continue"
              f"{' (' + ', '.join(going_on) + ')' if going_on else ''}, "
              f"{max(0, num_samples - len(going_on)) if num_samples >= 0 else 'as many'} new to run", flush=True)
    else:
        searcher = make_searcher(spec, sweep_dir)
        warm = spec.sampler.warm_start
        if warm:
            added, queued = seed_study(sweep_dir, spec.name, f"{plan.storage_path}/{warm}", warm,
                                       to_optuna_space(spec.space),
                                       ["maximize" if m == "max" else "minimize" for m in spec.scheduler.modes],
                                       spec.sampler.warm_start_top_k,
                                       required={n for n, p in spec.space.items() if not p.when},
                                       open_space=spec.space_function is not None)
            print(f"warm start: {added} finished trial(s) of sweep {warm} in the study; its best {queued} run first",
                  flush=True)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(spec.scheduler, spec.seed),
            num_samples=num_samples,
            max_concurrent_trials=concurrency,
            reuse_actors=strategy.trial_is_worker,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            **run_storage(sweep_dir),
            callbacks=callbacks,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=plan.max_failures if strategy.trial_is_worker else 0),
            # Kept checkpoints of in-trial runs (worker-group trials keep Train's).
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=plan.checkpoints.num_to_keep,
                checkpoint_score_attribute=plan.checkpoints.score_metric,
                checkpoint_score_order=plan.checkpoints.score_mode,
            ),
        ),
    )
    searcher.before_journal = tracker.writer.flush  # (set after the Tuner pickled its config)
    searcher.may_start = budget.may_start
    started = time.perf_counter()
    if num_samples:  # (a resumed sweep whose trials had all finished has none left to run)
        try:
            tuner.fit()
        except EOFError:  # (Tune's result grid reads each failed trial's error back: written empty on a full disk)
            if not (budget.reason or "").startswith(STORAGE_FULL):
                raise
    if budget.reason is None:  # (stopped by its budget: the running trials are to be resumed, not lost)
        lost = fail_stale_trials(sweep_dir, spec.name)
        if lost:
            print(f"{lost} Optuna trial(s) lost with an earlier driver marked FAIL", flush=True)
    push_study(sweep_dir, spec.name)
    return SweepOutcome(sweep_id, sweep_dir, tracker, time.perf_counter() - started, budget.reason)
