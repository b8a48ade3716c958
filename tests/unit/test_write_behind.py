"""WriteBehind (raysweep.tracking.buffer) over a real sqlite MLflow store: writes
return at once and arrive in order; a store that stops answering is retried (nothing
lost), one that refuses a write loses only that write; every change is said."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from raysweep.tracking.buffer import PENDING, WriteBehind
from raysweep.tracking.store import RunStore


class Unreachable(RunStore):
    """A real sqlite store whose next `away` calls fail as a stopped server's would."""

    away = 0

    def _call(self, name: str, *args, **kwargs):
        if self.away > 0:
            self.away -= 1
            raise ConnectionError("HTTPConnectionPool(host='tracking', port=5000): Max retries exceeded")
        return getattr(RunStore, name)(self, *args, **kwargs)

    def open(self, *args, **kwargs):
        return self._call("open", *args, **kwargs)

    def log_metrics(self, *args, **kwargs):
        return self._call("log_metrics", *args, **kwargs)

    def set_tags(self, *args, **kwargs):
        return self._call("set_tags", *args, **kwargs)


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_writes_arrive_in_order_under_the_run_a_stand_in_names(uri) -> None:
    said: list[str] = []
    store = WriteBehind(RunStore(uri, "exp"), say=said.append)
    run = store.open("sweep-1/a", "a", params={"lr": 0.1})
    assert run.startswith(PENDING)
    logged_at = int(time.time() * 1000)
    for epoch in range(3):
        store.log_metrics(run, {"val_loss": 1.0 / (epoch + 1)}, epoch)
    store.set_tags(run, {"raysweep.state": "FINISHED"})
    store.close(run, "FINISHED")
    assert store.flush(timeout=60)
    real = store.resolve(run)
    assert not real.startswith(PENDING) and store.find("sweep-1/a") == real
    client = MlflowClient(uri)
    got = client.get_run(real)
    assert got.info.status == "FINISHED" and got.data.params == {"lr": "0.1"}
    history = client.get_metric_history(real, "val_loss")
    assert [m.step for m in history] == [0, 1, 2] and history[0].timestamp >= logged_at
    assert said == [] and store.dropped == 0 and store.retried == 0


def test_a_store_that_stops_answering_loses_nothing_and_says_so(uri) -> None:
    said: list[str] = []
    inner = Unreachable(uri, "exp")
    store = WriteBehind(inner, max_backoff_s=0.05, say=said.append)
    run = store.open("sweep-1/a", "a")
    assert store.flush(timeout=60)
    inner.away = 4  # (the next four calls fail: the server is away)
    store.log_metrics(run, {"val_loss": 0.5}, 0)
    store.set_tags(run, {"raysweep.failures": "0"})
    store.log_metrics(run, {"val_loss": 0.4}, 1)
    assert store.flush(timeout=60)
    real = store.resolve(run)
    assert [m.value for m in MlflowClient(uri).get_metric_history(real, "val_loss")] == [0.5, 0.4]
    assert MlflowClient(uri).get_run(real).data.tags["raysweep.failures"] == "0"
    assert store.retried == 4 and store.dropped == 0
    assert len(said) == 2 and "does not answer (HTTPConnectionPool" in said[0] and "answers again" in said[1]


def test_a_refused_write_is_dropped_and_said_and_the_rest_arrive(uri) -> None:
    said: list[str] = []
    store = WriteBehind(RunStore(uri, "exp"), say=said.append)
    run = store.open("sweep-1/a", "a", params={"lr": 0.1})
    store.log_params(run, {"lr": 0.2})  # (MLflow refuses to change a logged param)
    store.log_metrics(run, {"val_loss": 0.5}, 0)
    assert store.flush(timeout=60)
    assert store.dropped == 1 and store.retried == 0
    assert len(said) == 1 and said[0].startswith(f"MLflow: log_params of run {run} not recorded (")
    assert len(MlflowClient(uri).get_metric_history(store.resolve(run), "val_loss")) == 1


def test_past_its_patience_a_write_is_dropped_not_waited_for_forever(uri) -> None:
    said: list[str] = []
    inner = Unreachable(uri, "exp")
    store = WriteBehind(inner, patience_s=0.2, max_backoff_s=0.05, say=said.append)
    run = store.open("sweep-1/a", "a")
    assert store.flush(timeout=60)
    inner.away = 10**6
    store.log_metrics(run, {"val_loss": 0.5}, 0)
    store.log_metrics(run, {"val_loss": 0.4}, 1)
    assert store.flush(timeout=60)
    assert store.dropped == 2 and "not recorded" in said[-1]


def test_a_sweep_tracker_writing_behind_ends_with_real_run_ids(uri) -> None:
    """The tracker hands out stand-ins while trials run; at the sweep's end its records
    and the parent's best-run tag name the real MLflow runs."""
    from raysweep.tracking.callbacks import SweepTracker

    base = RunStore(uri, "exp")
    parent_id = base.open("sweep/sweep-1", "sweep-1")
    tracker = SweepTracker(WriteBehind(base), "sweep-1", parent_id, "val_loss", "min", 2, echo=False)
    for trial, losses in {"a": (0.9, 0.5), "b": (0.8, 0.3)}.items():
        tracker.trial_started(trial, {"lr": 0.1})
        for epoch, loss in enumerate(losses):
            tracker.trial_result(trial, {"lr": 0.1}, {"epoch": epoch, "val_loss": loss})
        tracker.trial_completed(trial, {"lr": 0.1})
    tracker.close("FINISHED")
    children = {r.data.tags["raysweep.trial_id"]: r.info.run_id for r in base.children(parent_id)}
    assert {t: r.run_id for t, r in tracker.trials.items()} == children
    parent = MlflowClient(uri).get_run(parent_id)
    assert parent.data.tags["raysweep.best_run_id"] == children["b"] and parent.info.status == "FINISHED"


def test_it_pickles_as_tune_pickles_its_callbacks(uri) -> None:
    import pickle

    store = WriteBehind(RunStore(uri, "exp"), patience_s=7.0)
    store.open("sweep-1/a", "a")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.patience_s == 7.0 and copy.uri == uri and copy.pending == 0
    assert store.flush(timeout=60) and copy.find("sweep-1/a") == store.resolve("pending:sweep-1/a")
