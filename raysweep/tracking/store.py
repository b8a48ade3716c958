"""The MLflow store raysweep writes to, from the driver side only (workers never open runs)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from raysweep.config.load import base_dir
from raysweep.report import Report
from raysweep.tracking import tags as tag

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


def preemption_tags(report: Report, count: int) -> dict[str, Any]:
    """The MLflow tags of a run's `count`-th drain notice, from its checkpoint report."""
    deadline = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.drain_deadline_unix or 0))
    return {tag.PREEMPTIONS: count,
            tag.PREEMPTED_AT: f"epoch {report.epoch} step {report.step}: drain notice, "
                              f"checkpointed; node taken away at {deadline}"}


def record_preemption(store: Any, run_id: str, report: Report, preemptions: int,
                      say: Callable[[str], None]) -> int:
    """What a report does to its run before any metric is logged, the same for a `train`
    run and a sweep trial: a drain notice's checkpoint is counted, tagged on the run and
    said; a stop's reason is tagged and said. Returns the run's count of drain notices."""
    if report.stop_reason:  # (the run's own stop: tagged and said the same way)
        store.set_tags(run_id, {tag.STOP_REASON: report.stop_reason})
        say(f"stops early: {report.stop_reason}")
    if not report.preempted:
        return preemptions
    tags = preemption_tags(report, preemptions + 1)
    store.set_tags(run_id, tags)
    say(tags[tag.PREEMPTED_AT])
    return preemptions + 1


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
            [self.experiment_id], filter_string=f"tags.`{tag.KEY}` = '{key}'", max_results=1
        )
        return runs[0].info.run_id if runs else None

    def open(self, key: str, run_name: str, parent_id: str | None = None,
             params: dict[str, Any] | None = None) -> str:
        """The run tagged `key`, re-opened if it exists, else a new one."""
        run_id = self.find(key)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {tag.KEY: key}
        if parent_id:
            tags[tag.PARENT] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def children(self, parent_id: str) -> list[Any]:
        return self.client.search_runs([self.experiment_id], max_results=10000,
                                       filter_string=f"tags.`{tag.PARENT}` = '{parent_id}'")

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        return self.client.get_metric_history(run_id, key)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def close(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)
