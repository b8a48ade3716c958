"""Finding recorded runs again: by MLflow run id, sweep name or run folder.

Used by `raysweep runs|reproduce|report|register`. Every lookup that finds nothing
raises a one-line UserInputError that says how to list the valid ones.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from raysweep._ray_compat import quiet_mlflow_downloads
from raysweep.errors import UserInputError
from raysweep.tracking import tags as tag
from raysweep.tracking.record import RECORD_FILE
from raysweep.tracking.store import tracking_uri


def how_to_list(uri: str) -> str:
    return f"list them with `raysweep runs` or `mlflow ui --backend-store-uri {uri}`"


@dataclass
class RecordedRun:
    """One MLflow run of raysweep's, with its record (a trial's is its sweep's record,
    its params merged in)."""

    run: Run
    record: dict[str, Any]
    params: dict[str, Any]
    """The params the run trained with (fixed params + a trial's sampled ones)."""

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def kind(self) -> str:
        return self.run.data.tags.get(tag.KIND, "")


def client() -> MlflowClient:
    """The MLflow store raysweep writes to; one that does not exist is not created."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UserInputError(f"no MLflow store at {uri} (no raysweep run has written to it; set "
                             "MLFLOW_TRACKING_URI to the store your runs used, or run from their directory)")
    for name in ("mlflow.store.db.utils", "alembic"):  # table set-up chatter on stderr
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_mlflow_downloads()
    return MlflowClient(uri)


def get_run(run_id: str) -> Run:
    uri = tracking_uri()
    try:
        run = client().get_run(run_id)
    except MlflowException:
        run = None
    if run is None or tag.KIND not in run.data.tags:
        raise UserInputError(f"run {run_id!r}: no raysweep run with this id in {uri}; {how_to_list(uri)}")
    return run


def read_record(run: Run) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client().download_artifacts(run.info.run_id, RECORD_FILE, tmp)
        except Exception:  # MlflowException or OSError: the artifact is not there
            raise UserInputError(
                f"run {run.info.run_id!r}: it has no {RECORD_FILE} artifact (recorded by an older raysweep?)"
            ) from None
        return json.loads(Path(path).read_text())


def load_recorded(run_id: str) -> RecordedRun:
    run = get_run(run_id)
    tags = run.data.tags
    if tags.get(tag.KIND) == "trial":
        record = read_record(get_run(tags[tag.PARENT]))
        config = json.loads(tags.get(tag.TRIAL_CONFIG, "{}"))
        return RecordedRun(run, record, {**record["spec"]["params"], **config})
    record = read_record(run)
    return RecordedRun(run, record, dict(record["spec"]["params"]))


def find_sweep(sweep: str) -> Run:
    """A sweep's parent run from its MLflow run id, sweep name or run folder."""
    uri = tracking_uri()
    mlflow = client()
    folder = Path(sweep)
    if folder.is_dir() and (folder / RECORD_FILE).is_file():
        sweep = json.loads((folder / RECORD_FILE).read_text())["run_name"]
    try:
        run = mlflow.get_run(sweep)
        if run.data.tags.get(tag.KIND) == "sweep":
            return run
    except MlflowException:
        pass
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    runs = mlflow.search_runs(experiments, filter_string=f"tags.`{tag.KEY}` = 'sweep/{sweep}'",
                              max_results=1) if experiments else []
    if not runs:
        raise UserInputError(
            f"sweep {sweep!r}: no sweep with this name, parent run id or run folder in {uri}; "
            f"{how_to_list(uri)} (sweeps have kind 'sweep')"
        )
    return runs[0]


def children(parent: Run) -> list[Run]:
    experiment = parent.info.experiment_id
    runs = client().search_runs(
        [experiment], filter_string=f"tags.`{tag.PARENT}` = '{parent.info.run_id}'", max_results=10000)
    return sorted(runs, key=lambda r: r.info.start_time)


def list_runs(limit: int = 30) -> list[Run]:
    mlflow = client()
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    if not experiments:
        return []
    runs = mlflow.search_runs(experiments, filter_string=f"tags.`{tag.KIND}` != ''", max_results=limit,
                              order_by=["attributes.start_time DESC"])
    return list(runs)
