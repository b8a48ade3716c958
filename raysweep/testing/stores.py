"""Run stores and storage filesystems for tests and benchmarks."""

from __future__ import annotations

import itertools
from typing import Any

from raysweep.tracking.store import RunStore


class NullStore(RunStore):
    """A RunStore that writes nothing and creates no MLflow client: the tracking-off
    side of a benchmark, and sweeps whose MLflow runs are not what is measured
    (`raysweep.run.tune(..., store=NullStore())`).

    `open` hands out a new fake run id every call; `find` and `children` find nothing.
    """

    uri = "none"
    _ids = itertools.count()

    def __init__(self, uri: str = "none", experiment_name: str = "none") -> None:
        # (no super().__init__: that connects to MLflow and creates the experiment)
        self.uri = uri
        self.experiment_id = "none"

    def find(self, key: str) -> str | None:
        return None

    def open(self, key: str, run_name: str, parent_id: str | None = None,
             params: dict[str, Any] | None = None) -> str:
        return f"null-run-{next(self._ids)}"

    def children(self, parent_id: str) -> list[Any]:
        return []

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        return []

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        pass

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        pass

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        pass

    def close(self, run_id: str, status: str) -> None:
        pass
