"""What runs in a sweep trial's own process (Tune's function trainable): the trainer
itself (one worker in the trial, or rank 0 of a warm group), or the driver of the
trial's Train worker group. Nothing here imports Optuna, MLflow or the spec's models:
the trial trains from its plan and reports through Tune; the searcher, the tracker and
the spec stay on the sweep's driver (`driver.sweep`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
from ray import tune

from raysweep.worker.entry import train_in_trial
from raysweep.worker.plan import RunPlan
from raysweep.worker.warm_group import train_in_warm_group

DRIVER_NODE_FILE = "driver_node"
RESUME_KEY = "_raysweep_resume"
"""The config key of a trial that a resumed sweep continues (see driver.sweep): its
raysweep trial id (the one MLflow and the journal know it by; Tune gives the trial a
new id in each driver's run) and the checkpoint it continues from (None: from the
start). Never part of the trainer's params."""


def trial_identity(config: dict[str, Any], tune_trial_id: str) -> tuple[str, dict[str, Any], str | None]:
    """(raysweep trial id, the trainer's params, the checkpoint to continue from) of a
    trial's config: a new trial's id is Tune's."""
    resume = config.get(RESUME_KEY)
    if not resume:
        return tune_trial_id, config, None
    return str(resume["trial_id"]), {k: v for k, v in config.items() if k != RESUME_KEY}, resume.get("checkpoint")


def _start(config: dict[str, Any], trials_dir: str) -> tuple[str, dict[str, Any], str | None]:
    """This trial's identity; records where its function (and a Train controller) ran."""
    trial_id, params, checkpoint = trial_identity(config, tune.get_context().get_trial_id())
    if "://" not in trials_dir:
        folder = Path(trials_dir) / trial_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DRIVER_NODE_FILE).write_text(ray.get_runtime_context().get_node_id())
    return trial_id, params, checkpoint


def run_in_trial(config: dict[str, Any], *, plan: RunPlan, trials_dir: str) -> None:
    _, params, checkpoint = _start(config, trials_dir)
    train_in_trial(plan.with_params(params), resume_from=checkpoint)


def run_warm_group(config: dict[str, Any], *, plan: RunPlan, trials_dir: str) -> None:
    _, params, checkpoint = _start(config, trials_dir)
    train_in_warm_group(plan.with_params(params), resume_from=checkpoint)


def run_worker_group(config: dict[str, Any], *, plan: RunPlan, trials_dir: str) -> None:
    # (imported here: this trial drives a Train run, whose builder brings the run's MLflow
    # callback with it; the trials that train in their own process never import it)
    from ray.tune.integration.ray_train import TuneReportCallback

    from raysweep.driver.trainer import build_trainer

    # (a continued trial's Train run, named by its raysweep id, resumes from its own
    # latest checkpoint: Train restores a run of the same name and storage)
    trial_id, params, _ = _start(config, trials_dir)
    build_trainer(plan.with_params(params), run_name=trial_id, callbacks=[TuneReportCallback()],
                  storage_path=trials_dir).fit()
