"""The tracking server stops answering while a sweep's trial runs are being written
(SIGSTOP to a real `mlflow server`), longer than MLflow's own retries last: the writes
are kept, retried, and all arrive once it answers again."""

from __future__ import annotations

import os
import signal
import time

from mlflow.tracking import MlflowClient

from raysweep.tracking.buffer import WriteBehind
from raysweep.tracking.store import RunStore
from tests.support.mlflow_store import mlflow_server

STOPPED_S = 8


def test_writes_outlive_a_tracking_server_that_stops_answering(tmp_path, mlflow_stores, monkeypatch,
                                                               fault_figures) -> None:
    with mlflow_server(tmp_path, mlflow_stores.new(tmp_path / "mlflow.db")) as (server, uri):
        said: list[str] = []
        store = WriteBehind(RunStore(uri, "outage"), max_backoff_s=2, say=said.append)
        run = store.open("sweep-1/a", "a", params={"lr": 0.1})
        assert store.flush(timeout=60)
        # MLflow's own HTTP retries off and a 2 s request timeout (MLflow reads both at
        # every request): each write to the stopped server fails within seconds, so
        # what survives is WriteBehind's doing.
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        os.killpg(server.pid, signal.SIGSTOP)
        fault_figures(faults_injected=1)
        try:
            for epoch in range(3):  # (each returns at once: the trial's events are not held up)
                store.log_metrics(run, {"val_loss": 1.0 / (epoch + 1)}, epoch)
            store.set_tags(run, {"raysweep.state": "FINISHED"})
            store.close(run, "FINISHED")
            time.sleep(STOPPED_S)
            assert store.pending > 0 and store.retried >= 1, (store.pending, store.retried, said)
        finally:
            os.killpg(server.pid, signal.SIGCONT)
        assert store.flush(timeout=180), said
        client = MlflowClient(uri)
        real = store.resolve(run)
        history = client.get_metric_history(real, "val_loss")
        got = client.get_run(real)
        fault_figures(faults_survived=int(len(history) == 3 and got.info.status == "FINISHED"),
                      tracking_writes_dropped=store.dropped)
        assert [m.step for m in history] == [0, 1, 2] and got.info.status == "FINISHED"
        assert got.data.tags["raysweep.state"] == "FINISHED" and store.dropped == 0
        assert "does not answer" in said[0] and "answers again" in said[-1], said
