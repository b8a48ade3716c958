"""What runs in a sweep trial's own process (Tune's function trainable): the trainer
itself (one worker in the trial, or rank 0 of a warm group), or the driver of the
trial's Train worker group. Nothing here imports Optuna, MLflow or the spec's models:
the trial trains from its plan and reports through Tune; the searcher, the tracker and
the spec stay on the sweep's driver (`execution.sweep`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
from ray import tune

from raysweep.execution.plan import RunPlan
from raysweep.execution.warm_group import train_in_warm_group
from raysweep.execution.worker import train_in_trial

DRIVER_NODE_FILE = "driver_node"


def note_driver_node(trials_dir: str) -> str:
    """Record where this trial's function (and a Train controller) ran; returns the trial id."""
    trial_id = tune.get_context().get_trial_id()
    if "://" not in trials_dir:
        folder = Path(trials_dir) / trial_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DRIVER_NODE_FILE).write_text(ray.get_runtime_context().get_node_id())
    return trial_id


def run_in_trial(config: dict[str, Any], *, plan: RunPlan, trials_dir: str) -> None:
    note_driver_node(trials_dir)
    train_in_trial(plan.with_params(config))


def run_warm_group(config: dict[str, Any], *, plan: RunPlan, trials_dir: str) -> None:
    note_driver_node(trials_dir)
    train_in_warm_group(plan.with_params(config))


def run_worker_group(config: dict[str, Any], *, plan: RunPlan, trials_dir: str) -> None:
    # (imported here: this trial drives a Train run, whose builder brings the run's MLflow
    # callback with it; the trials that train in their own process never import it)
    from ray.tune.integration.ray_train import TuneReportCallback

    from raysweep.execution.driver import build_trainer

    trial_id = note_driver_node(trials_dir)
    build_trainer(plan.with_params(config), run_name=trial_id, callbacks=[TuneReportCallback()],
                  storage_path=trials_dir).fit()
