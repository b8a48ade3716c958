"""An Optuna sweep on Ray Tune: each trial drives one data-parallel TorchTrainer.

Train V2 pattern: `Tuner(trial_driver)`, where the trial driver builds a
TorchTrainer with `TuneReportCallback` and calls `fit()`. Tune does not count
Train's workers, so the trial itself asks for no CPU and `max_concurrent_trials`
is derived from the cluster's CPUs/GPUs.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from raysweep.errors import UserInputError
from raysweep.space import to_optuna_space
from raysweep.spec import BudgetSpec, SamplerSpec, ScalingSpec, SchedulerSpec, Spec, resolve_path
from raysweep.tracking import SweepTracker
from raysweep.training import TrainJob, build_trainer, worker_plan

STUDY_FILE = "optuna.journal"
# The trial driver only waits on its TorchTrainer: it takes no CPU (Train's workers
# do). Tune refuses an empty request, so it reserves a little memory instead.
TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 1024**2}


class _OptunaSearch(OptunaSearch):
    """OptunaSearch that marks an errored trial FAIL even if it reported before."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, None if error else result, error)


def study_dir(sweep_dir: str, study_name: str) -> str:
    """Where the study's journal lives: the sweep's folder, or, when that is an
    s3:// / gs:// URI, the same layout under ./results on the driver (the journal
    needs a local file with locking)."""
    if "://" not in sweep_dir:
        return sweep_dir
    return resolve_path(f"results/{study_name}/{sweep_dir.rstrip('/').rsplit('/', 1)[-1]}")


def study_storage(sweep_dir: str) -> JournalStorage:
    """The durable Optuna storage of a sweep: a journal file in its folder."""
    path = Path(sweep_dir) / STUDY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def load_study(sweep_dir: str, study_name: str) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=study_storage(sweep_dir))


def make_sampler(sampler: SamplerSpec) -> optuna.samplers.BaseSampler:
    if sampler.type == "random":
        return optuna.samplers.RandomSampler(seed=sampler.seed)
    extra = {} if sampler.n_startup_trials is None else {"n_startup_trials": sampler.n_startup_trials}
    return optuna.samplers.TPESampler(seed=sampler.seed, **extra)


def make_scheduler(scheduler: SchedulerSpec) -> TrialScheduler:
    if scheduler.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epochs_completed",
        metric=scheduler.metric,
        mode=scheduler.mode,
        max_t=scheduler.max_epochs,
        grace_period=scheduler.grace_period,
        reduction_factor=scheduler.reduction_factor,
    )


def max_concurrent_trials(scaling: ScalingSpec, budget: BudgetSpec, cpus: float, gpus: float) -> int:
    """How many trials fit on the cluster at once, each with all its workers."""
    need_cpu = scaling.num_workers * scaling.cpus_per_worker
    need_gpu = scaling.num_workers * scaling.gpus_per_worker
    fits = math.floor(cpus / need_cpu + 1e-9)
    if need_gpu:
        fits = min(fits, math.floor(gpus / need_gpu + 1e-9))
    if fits < 1:
        raise UserInputError(
            f"scaling: one trial needs {need_cpu:g} CPUs and {need_gpu:g} GPUs, "
            f"but the cluster has {cpus:g} CPUs and {gpus:g} GPUs"
        )
    return max(1, min(fits, budget.max_concurrent_trials or fits, budget.num_trials))


DRIVER_NODE_FILE = "driver_node"


def _note_driver_node(trials_dir: str) -> str:
    """Record where this trial's driver (and its Train controller) ran; returns the trial id."""
    import ray

    trial_id = tune.get_context().get_trial_id()
    if "://" not in trials_dir:
        folder = Path(trials_dir) / trial_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DRIVER_NODE_FILE).write_text(ray.get_runtime_context().get_node_id())
    return trial_id


def _trial_driver(config: dict[str, Any], *, job: TrainJob, params: dict[str, Any], trials_dir: str) -> None:
    trial_id = _note_driver_node(trials_dir)
    trainer = build_trainer(job, {**params, **config}, run_name=trial_id,
                            callbacks=[TuneReportCallback()], storage_path=trials_dir)
    trainer.fit()


def _trial_in_process(config: dict[str, Any], *, job: TrainJob, params: dict[str, Any], trials_dir: str) -> None:
    """A one-worker trial trained in the trial's own process (see ScalingSpec.worker_group)."""
    from raysweep.worker import run_in_trial

    _note_driver_node(trials_dir)
    run_in_trial(worker_plan(job, {**params, **config}))


def trains_in_trial(scaling: ScalingSpec, driver_resources: dict[str, float] | None = None) -> bool:
    """One-worker trials train in the trial's own process, unless the profile pins trial
    drivers to some nodes (trial_driver_resources): those may have no CPU to train on."""
    return scaling.num_workers == 1 and scaling.worker_group == "auto" and not driver_resources


@dataclass
class SweepOutcome:
    sweep_id: str
    sweep_dir: str
    tracker: SweepTracker
    wall_s: float


TUNE_DIR = "tune"


def find_sweep_to_resume(root: str, name: str, sweep_id: str | None) -> str:
    """The sweep id to resume: the one given, else the newest sweep of this spec
    with Tune state under the experiment's run folder."""
    base = Path(root)
    candidates = sorted(p.name for p in base.glob(f"{name}-*") if (p / TUNE_DIR).is_dir()) if base.is_dir() else []
    if sweep_id is None and candidates:
        return candidates[-1]
    if sweep_id in candidates:
        return sweep_id
    known = ", ".join(candidates[-5:]) or "none"
    raise UserInputError(f"{root}: no sweep {sweep_id or name + '-*'} with Tune state to resume (found: {known})")


def fail_stale_trials(sweep_dir: str, study_name: str) -> int:
    """Optuna trials still RUNNING when a sweep ends were lost with a crashed driver:
    mark them FAIL so the study holds no stale RUNNING trial. Returns how many."""
    study = load_study(study_dir(sweep_dir, study_name), study_name)
    stale = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for trial in stale:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(stale)


def run_sweep(spec: Spec, job: TrainJob, sweep_id: str, tracker: SweepTracker,
              cpus: float, gpus: float, driver_resources: dict[str, float] | None = None,
              resume: bool = False) -> SweepOutcome:
    """Run the whole sweep; trials that fail are recorded, not raised.

    `driver_resources` (the profile's trial_driver_resources, e.g. {"on_demand": 0.01})
    pins each trial's driver, and with it Train's controller, to nodes that have them.
    `resume` continues the sweep in `sweep_id` (Tuner.restore): finished trials are
    not run again, unfinished ones continue from their latest checkpoints, and the
    searcher (with its Optuna study) picks up where it was.
    """
    sweep_dir = f"{job.storage_path}/{sweep_id}"
    # Tune's own console tables off: SweepTracker prints one line per trial event.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # In-trial runs checkpoint every epoch by design; Tune's "snapshotting may become
    # a bottleneck" warning would fire for every short trial.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Snapshot Tune's experiment state (trials + searcher) at every step, not every
    # 10 s or more: a driver killed between two snapshots would forget started trials.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    searcher = _OptunaSearch(
        space=to_optuna_space(spec.space),
        metric=spec.scheduler.metric,
        mode=spec.scheduler.mode,
        sampler=make_sampler(spec.sampler),
        study_name=spec.name,
        storage=study_storage(study_dir(sweep_dir, spec.name)),
    )
    in_trial = trains_in_trial(spec.scaling, driver_resources)
    driver = functools.partial(_trial_in_process if in_trial else _trial_driver, job=job,
                               params=spec.params, trials_dir=f"{sweep_dir}/trials")
    # In-trial, the trial is the worker: it asks for the worker's CPUs and GPUs.
    resources = ({"CPU": spec.scaling.cpus_per_worker, "GPU": spec.scaling.gpus_per_worker} if in_trial
                 else TRIAL_DRIVER_RESOURCES)
    trainable = tune.with_resources(driver, {**resources, **(driver_resources or {})})
    if resume:
        tuner = tune.Tuner.restore(f"{sweep_dir}/{TUNE_DIR}", trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
        # A restored Tuner keeps the callbacks it pickled; this run's tracker replaces them.
        tuner._local_tuner._run_config.callbacks = [tracker]
        return _fit(tuner, spec, sweep_id, sweep_dir, tracker)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(spec.scheduler),
            num_samples=spec.budget.num_trials,
            max_concurrent_trials=max_concurrent_trials(spec.scaling, spec.budget, cpus, gpus),
            # Warm processes: a one-worker trial skips process start and imports.
            reuse_actors=in_trial,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=sweep_dir,
            callbacks=[tracker],
            verbose=0,
            # In-trial runs retry through Tune (from their latest checkpoint);
            # worker-group trials retry inside Train (FailureConfig of the trainer).
            failure_config=tune.FailureConfig(max_failures=spec.failure.max_failures if in_trial else 0),
            # Kept checkpoints of in-trial runs (worker-group trials keep Train's).
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=spec.checkpoint.num_to_keep,
                checkpoint_score_attribute=spec.checkpoint.score_metric,
                checkpoint_score_order=spec.checkpoint.score_mode,
            ),
        ),
    )
    return _fit(tuner, spec, sweep_id, sweep_dir, tracker)


def _fit(tuner: tune.Tuner, spec: Spec, sweep_id: str, sweep_dir: str, tracker: SweepTracker) -> SweepOutcome:
    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tuner.fit()
    lost = fail_stale_trials(sweep_dir, spec.name)
    if lost:
        print(f"{lost} Optuna trial(s) lost with an earlier driver marked FAIL", flush=True)
    return SweepOutcome(sweep_id, sweep_dir, tracker, time.perf_counter() - started)
