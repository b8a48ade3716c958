"""MLflow, written from the driver side only: workers never open runs.

- `raysweep train`: one run; `TrainMetricsCallback` (a Ray Train UserCallback,
  which runs in the Train controller on the driver's node) logs each epoch.
- `raysweep tune`: `SweepTracker`, a Tune callback on the driver: a parent run per
  sweep, a child run per trial (tag `mlflow.parentRunId`), metrics batched with
  `step=epoch`, and the right end status for every run.

Runs carry a `raysweep.key` tag (run name, or sweep name + trial id) so a resumed
run re-attaches to its MLflow run instead of creating another.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune
from ray.train.v2.api.callback import UserCallback

from raysweep.spec import base_dir

KEY_TAG = "raysweep.key"
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_LENGTH = 6000


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else MLflow's default `sqlite:///mlflow.db`, made absolute
    (against base_dir()) so Ray actors with another working directory, and submitted
    jobs, write to the same file."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{base_dir() / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """For a sqlite store, artifacts beside the database file (`mlartifacts/`), not in
    whatever directory the process happens to run in; else the server's default."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted keys: {'a': {'b': 1}} -> {'a.b': 1}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The trainer's own numeric metrics from a report (Tune's bookkeeping left out)."""
    skip = {"done", "training_iteration", "first_step_unix", "report_unix", "timestamp", "time_this_iter_s",
            "time_total_s", "time_since_restore", "iterations_since_restore", "pid", "trial_id"}
    return {
        k: float(v)
        for k, v in result.items()
        if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)
        and math.isfinite(float(v))
    }


class RunStore:
    """Thin layer over MlflowClient for raysweep's runs (explicit run ids only)."""

    def __init__(self, uri: str, experiment_name: str) -> None:
        self.uri = uri
        self.client = MlflowClient(uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        self.experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(experiment_name, artifact_location=artifact_location(uri))
        )

    def find(self, key: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1
        )
        return runs[0].info.run_id if runs else None

    def open(self, key: str, run_name: str, parent_id: str | None = None,
             params: dict[str, Any] | None = None) -> str:
        """The run tagged `key`, re-opened if it exists, else a new one."""
        run_id = self.find(key)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {KEY_TAG: key}
        if parent_id:
            tags[PARENT_TAG] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def close(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)


class TrainMetricsCallback(UserCallback):
    """Logs each reported epoch of one Train run to its MLflow run."""

    def __init__(self, uri: str, experiment_name: str, run_id: str, started_at: float) -> None:
        self.uri, self.experiment_name, self.run_id = uri, experiment_name, run_id
        self.started_at = started_at
        self._store: RunStore | None = None

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if self._store is None:
            self._store = RunStore(self.uri, self.experiment_name)
        values = epoch_metrics(metrics[0])
        if "first_step_unix" in metrics[0]:
            values["startup_s"] = float(metrics[0]["first_step_unix"]) - self.started_at
        self._store.log_metrics(self.run_id, values, step=int(values.get("epoch", 0)))


@dataclass
class TrialRecord:
    """What the sweep knows about one trial, for MLflow and the final table."""

    trial_id: str
    run_id: str
    params: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    status: str = "RUNNING"
    early_stopped: bool = False
    error: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None
    startup_s: float | None = None
    """Trial start (on the driver) to the first training step (in a worker)."""
    checkpoint: str | None = None
    """The latest checkpoint a worker-group trial reported (Train's path)."""

    @property
    def wall_s(self) -> float:
        return (self.ended or time.time()) - self.started

    def best(self, metric: str, mode: str) -> dict[str, float] | None:
        rows = [r for r in self.history if metric in r]
        if not rows:
            return None
        pick = min if mode == "min" else max
        return pick(rows, key=lambda r: r[metric])


class SweepTracker(tune.Callback):
    """Parent run per sweep, child run per trial, printed one line per result."""

    def __init__(self, store: RunStore, sweep_key: str, parent_id: str, metric: str,
                 mode: str, max_epochs: int, echo: bool = True) -> None:
        self.store, self.sweep_key, self.parent_id = store, sweep_key, parent_id
        self.metric, self.mode, self.max_epochs, self.echo = metric, mode, max_epochs, echo
        self.trials: dict[str, TrialRecord] = {}
        self.best_so_far: tuple[str, float] | None = None

    def _record(self, trial: Any) -> TrialRecord:
        record = self.trials.get(trial.trial_id)
        if record is None:
            key = f"{self.sweep_key}/{trial.trial_id}"
            run_id = self.store.open(key, run_name=trial.trial_id, parent_id=self.parent_id,
                                     params=trial.config)
            self.store.set_tags(run_id, {"raysweep.trial_id": trial.trial_id, "raysweep.kind": "trial",
                                         "raysweep.trial_config": json.dumps(trial.config, default=str)})
            record = self.trials[trial.trial_id] = TrialRecord(trial.trial_id, run_id, dict(trial.config))
        return record

    def _say(self, text: str) -> None:
        if self.echo:
            print(text, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._record(trial)
        self._say(f"[{trial.trial_id}] started {_short(trial.config)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        record = self._record(trial)
        record.checkpoint = result.get("checkpoint_path", record.checkpoint)
        values = epoch_metrics(result)
        if "first_step_unix" in result and record.startup_s is None:
            record.startup_s = float(result["first_step_unix"]) - record.started
            values["startup_s"] = record.startup_s
        record.history.append(values)
        self.store.log_metrics(record.run_id, values, step=int(values.get("epoch", 0)))
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items() if k not in ("epoch", "epochs_completed"))
        best = self._running_best(record, values)
        self._say(f"[{trial.trial_id}] epoch {int(values.get('epoch', 0))} {shown}{best}")

    def _running_best(self, record: TrialRecord, values: dict[str, float]) -> str:
        """' | best <metric> so far ...' over all trials' results (marked when this result is it)."""
        if self.metric not in values:
            return ""
        if self._consider(record.trial_id, values[self.metric]):
            return f" | new best {self.metric}={values[self.metric]:.4g}"
        return f" | best {self.metric}={self.best_so_far[1]:.4g} ({self.best_so_far[0]})"

    def _consider(self, trial_id: str, value: float) -> bool:
        """Whether `value` is the best so far (and so becomes it)."""
        sign = 1 if self.mode == "min" else -1
        if self.best_so_far is None or sign * value < sign * self.best_so_far[1]:
            self.best_so_far = (trial_id, value)
            return True
        return False

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self._record(trial)
        last_epoch = int(record.history[-1].get("epoch", -1)) if record.history else -1
        record.early_stopped = last_epoch + 1 < self.max_epochs
        record.status, record.ended = "FINISHED", time.time()
        checkpoint = getattr(trial, "checkpoint", None)
        if checkpoint is not None:  # in-trial runs checkpoint through Tune
            record.checkpoint = checkpoint.path
        tags: dict[str, Any] = {"raysweep.early_stopped": record.early_stopped}
        if record.checkpoint:
            tags["raysweep.checkpoint"] = record.checkpoint
        self.store.set_tags(record.run_id, tags)
        self.store.close(record.run_id, "FINISHED")
        how = "stopped early" if record.early_stopped else "finished"
        self._say(f"[{trial.trial_id}] {how} after {last_epoch + 1} epoch(s)")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self._record(trial)
        record.status, record.ended = "FAILED", time.time()
        record.error = _error_summary(trial)
        self.store.set_tags(record.run_id, {"raysweep.error": record.error[:5000]})
        self.store.close(record.run_id, "FAILED")
        self._say(f"[{trial.trial_id}] FAILED: {record.error}")

    def load_existing(self) -> int:
        """A resumed sweep: the trials an earlier driver ran, read back from MLflow,
        so the summary, the best trial and the running best include them."""
        client = self.store.client
        runs = client.search_runs([self.store.experiment_id], max_results=10000,
                                  filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_id}'")
        for run in runs:
            tags = run.data.tags
            trial_id = tags.get("raysweep.trial_id")
            if not trial_id:
                continue
            rows: dict[int, dict[str, float]] = {}
            for key in run.data.metrics:
                for m in client.get_metric_history(run.info.run_id, key):
                    rows.setdefault(m.step, {"epoch": float(m.step)})[key] = m.value
            record = TrialRecord(
                trial_id, run.info.run_id, json.loads(tags.get("raysweep.trial_config", "{}")),
                history=[rows[s] for s in sorted(rows)], status=run.info.status,
                early_stopped=tags.get("raysweep.early_stopped") == "True", error=tags.get("raysweep.error", ""),
                started=run.info.start_time / 1000, ended=(run.info.end_time or 0) / 1000 or None,
                checkpoint=tags.get("raysweep.checkpoint"))
            self.trials[trial_id] = record
            best = record.best(self.metric, self.mode)
            if best is not None:
                self._consider(trial_id, best[self.metric])
        return len(self.trials)

    def best_trial(self) -> TrialRecord | None:
        scored = [(t, t.best(self.metric, self.mode)) for t in self.trials.values()
                  if t.status == "FINISHED"]
        scored = [(t, b) for t, b in scored if b is not None]
        if not scored:
            return None
        sign = 1 if self.mode == "min" else -1
        return min(scored, key=lambda tb: sign * tb[1][self.metric])[0]

    def close_all(self, status: str) -> None:
        """End the sweep: open child runs get `status`, the parent gets the best trial."""
        for record in self.trials.values():
            if record.status == "RUNNING":  # in a finished sweep: a trial lost with a crashed driver
                record.status = "KILLED" if status == "FINISHED" else status
                self.store.close(record.run_id, record.status)
        best = self.best_trial()
        if best is not None:
            metrics = best.best(self.metric, self.mode) or {}
            self.store.set_tags(self.parent_id, {
                "raysweep.best_trial_id": best.trial_id,
                "raysweep.best_run_id": best.run_id,
                **{f"raysweep.best.{k}": v for k, v in metrics.items()},
            })
            self.store.log_metrics(self.parent_id, {f"best_{k}": v for k, v in metrics.items()}, 0)
        self.store.close(self.parent_id, status)


def _short(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())


def _error_summary(trial: Any) -> str:
    """The last line of the trial's error (the cause a user needs), not a traceback."""
    text = ""
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        text = Path(path).read_text(errors="replace")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line
    return lines[-1] if lines else "unknown error"
