"""SweepTracker driven by plain trial events (no Ray) against a real sqlite MLflow
store: trial states, MLflow runs and tags, console lines, and a resumed sweep
reading it all back."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from raysweep.testing.helpers import metric_history
from raysweep.tracking.callbacks import SweepTracker
from raysweep.tracking.store import RunStore
from raysweep.tracking.trials import TrialState

METRIC, MODE, MAX_EPOCHS = "val_loss", "min", 3
CONFIGS = {"a": {"lr": 0.1}, "b": {"lr": 0.2}, "c": {"lr": 0.3}, "d": {"lr": 0.4}}
# Tune's and raysweep's bookkeeping in a report: never logged as metrics.
BOOKKEEPING = {"done": False, "training_iteration": 1, "trial_id": "x", "time_total_s": 1.5, "pid": 123,
               "timestamp": 1_700_000_000, "report_unix": 1_700_000_000.5}


def report(epoch: int, val_loss: float, **extra) -> dict:
    """One epoch's report as Tune hands it to the callback."""
    return {"epoch": epoch, "train_loss": 1.0 - epoch / 10, METRIC: val_loss, "epochs_completed": epoch + 1,
            **BOOKKEEPING, **extra}


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(f"sqlite:///{tmp_path}/mlflow.db", "exp")


def new_tracker(store, parent_id: str) -> SweepTracker:
    return SweepTracker(store, "sweep-1", parent_id, METRIC, MODE, MAX_EPOCHS)


def run_sweep(tracker: SweepTracker, checkpoint: Path) -> None:
    """a: all 3 epochs; b: 1 epoch, then stopped (as ASHA does); c: the lowest val_loss,
    then an error; d: started, then the driver ends the sweep under it."""
    t = tracker
    t.trial_started("a", CONFIGS["a"])
    started_a = t.trials["a"].started
    t.trial_started("b", CONFIGS["b"])
    t.trial_result("a", CONFIGS["a"], report(0, 0.9, first_step_unix=started_a + 2.5))
    t.trial_result("b", CONFIGS["b"], report(0, 0.7))
    t.trial_completed("b", CONFIGS["b"])
    t.trial_result("a", CONFIGS["a"], report(1, 0.6, checkpoint_path=str(checkpoint / "1")))
    t.trial_started("c", CONFIGS["c"])
    t.trial_result("c", CONFIGS["c"], report(0, 0.1))
    t.trial_failed("c", CONFIGS["c"], "ValueError: x")
    t.trial_result("a", CONFIGS["a"], report(2, 0.5))
    t.trial_completed("a", CONFIGS["a"], checkpoint=str(checkpoint / "2"))
    t.trial_started("d", CONFIGS["d"])
    t.close("FINISHED")


def test_trial_events_give_states_runs_tags_and_console_lines(store, tmp_path, capsys) -> None:
    parent_id = store.open("sweep/sweep-1", "sweep-1")
    tracker = new_tracker(store, parent_id)
    run_sweep(tracker, tmp_path / "ckpt")

    states = {tid: record.state for tid, record in tracker.trials.items()}
    assert states == {"a": TrialState.FINISHED, "b": TrialState.STOPPED_EARLY, "c": TrialState.FAILED,
                      "d": TrialState.KILLED}
    assert tracker.best_trial().trial_id == "a", "a failed trial is never the best"
    assert tracker.state.best_so_far == ("c", 0.1), "the running best counts every report"
    assert tracker.trials["a"].startup_s == pytest.approx(2.5)
    assert all(r.ended is not None for r in tracker.trials.values())

    client = MlflowClient(store.uri)
    runs = {r.data.tags["raysweep.trial_id"]: r for r in store.children(parent_id)}
    assert set(runs) == set(CONFIGS)
    expected = {  # trial: (MLflow status, raysweep.state, raysweep.early_stopped)
        "a": ("FINISHED", "FINISHED", "False"),
        "b": ("FINISHED", "STOPPED_EARLY", "True"),
        "c": ("FAILED", "FAILED", "False"),
        "d": ("KILLED", "KILLED", "False"),
    }
    for tid, (status, state, early) in expected.items():
        run = client.get_run(runs[tid].info.run_id)
        tags = run.data.tags
        assert (run.info.status, tags["raysweep.state"], tags["raysweep.early_stopped"]) == (status, state, early), tid
        assert tags["raysweep.kind"] == "trial" and run.info.run_name == tid
        assert tags["raysweep.key"] == f"sweep-1/{tid}" and tags["mlflow.parentRunId"] == parent_id
        assert run.data.params == {"lr": str(CONFIGS[tid]["lr"])}
        assert run.info.end_time is not None
    assert runs["c"].data.tags["raysweep.error"] == "ValueError: x"
    assert "raysweep.error" not in runs["a"].data.tags
    assert runs["a"].data.tags["raysweep.checkpoint"] == str(tmp_path / "ckpt" / "2")

    a = runs["a"].info.run_id  # metrics by epoch, Tune's bookkeeping left out
    assert metric_history(store.uri, a, METRIC) == {0: 0.9, 1: 0.6, 2: 0.5}
    assert set(runs["a"].data.metrics) == {"epoch", "train_loss", METRIC, "epochs_completed", "startup_s",
                                           "system/held_s", "system/cpu_hours", "system/gpu_hours"}
    assert metric_history(store.uri, a, "startup_s") == {0: pytest.approx(2.5)}
    assert metric_history(store.uri, runs["d"].info.run_id, METRIC) == {}

    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["raysweep.best_trial_id"] == "a"
    assert parent.data.tags["raysweep.best_run_id"] == a
    assert float(parent.data.tags["raysweep.best.val_loss"]) == 0.5
    assert parent.data.metrics["best_val_loss"] == 0.5

    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "[a] started lr=0.1",
        "[b] started lr=0.2",
        "[a] epoch 0 train_loss=1 val_loss=0.9 startup_s=2.5 | new best val_loss=0.9",
        "[b] epoch 0 train_loss=1 val_loss=0.7 | new best val_loss=0.7",
        "[b] stopped early after 1 epoch(s)",
        "[a] epoch 1 train_loss=0.9 val_loss=0.6 | new best val_loss=0.6",
        "[c] started lr=0.3",
        "[c] epoch 0 train_loss=1 val_loss=0.1 | new best val_loss=0.1",
        "[c] FAILED: ValueError: x",
        "[a] epoch 2 train_loss=0.8 val_loss=0.5 | best val_loss=0.1 (c)",
        "[a] finished after 3 epoch(s)",
        "[d] started lr=0.4",
    ]


def test_resumed_sweep_reads_every_trial_back(store, tmp_path, capsys) -> None:
    parent_id = store.open("sweep/sweep-1", "sweep-1")
    first = new_tracker(store, parent_id)
    run_sweep(first, tmp_path / "ckpt")

    again = new_tracker(store, store.open("sweep/sweep-1", "sweep-1"))
    assert again.writer.parent_id == parent_id, "the resumed sweep re-attaches to its parent run"
    assert again.load_existing() == 4
    for tid, before in first.trials.items():
        after = again.trials[tid]
        assert (after.state, after.run_id, after.params, after.error) == (
            before.state, before.run_id, before.params, before.error), tid
        assert after.history == before.history, tid
        assert after.epochs == before.epochs
        assert after.ended is not None and before.started - 5 < after.started <= before.started
    assert again.trials["a"].checkpoint == str(tmp_path / "ckpt" / "2")
    assert again.best_trial().trial_id == "a"
    assert again.state.best_so_far == ("c", 0.1)

    # Tune resumes d (unfinished): its events land on its existing run, no new one.
    capsys.readouterr()
    again.trial_started("d", CONFIGS["d"])
    for epoch, loss in enumerate((0.45, 0.3, 0.2)):
        again.trial_result("d", CONFIGS["d"], report(epoch, loss))
    again.trial_completed("d", CONFIGS["d"])
    again.close("FINISHED")
    assert again.trials["d"].state is TrialState.FINISHED
    runs = {r.data.tags["raysweep.trial_id"]: r for r in store.children(parent_id)}
    assert len(store.children(parent_id)) == 4
    assert (runs["d"].info.status, runs["d"].data.tags["raysweep.state"]) == ("FINISHED", "FINISHED")
    parent = MlflowClient(store.uri).get_run(parent_id)
    assert parent.data.tags["raysweep.best_trial_id"] == "d"
    assert capsys.readouterr().out.splitlines()[-1] == "[d] finished after 3 epoch(s)"


def test_a_failed_sweep_closes_its_running_trials_failed(store) -> None:
    parent_id = store.open("sweep/sweep-2", "sweep-2")
    tracker = SweepTracker(store, "sweep-2", parent_id, METRIC, MODE, MAX_EPOCHS, echo=False)
    tracker.trial_started("a", CONFIGS["a"])
    tracker.trial_result("a", CONFIGS["a"], report(0, 0.9))
    tracker.close("FAILED")
    assert tracker.trials["a"].state is TrialState.FAILED
    client = MlflowClient(store.uri)
    (run,) = store.children(parent_id)
    assert (run.info.status, run.data.tags["raysweep.state"]) == ("FAILED", "FAILED")
    parent = client.get_run(parent_id)
    assert parent.info.status == "FAILED" and "raysweep.best_trial_id" not in parent.data.tags


def test_echo_off_prints_nothing(store, capsys) -> None:
    parent_id = store.open("sweep/quiet", "quiet")
    tracker = SweepTracker(store, "quiet", parent_id, METRIC, MODE, MAX_EPOCHS, echo=False)
    tracker.trial_started("a", CONFIGS["a"])
    tracker.trial_result("a", CONFIGS["a"], report(0, 0.9))
    tracker.trial_failed("a", CONFIGS["a"], "ValueError: x")
    tracker.close("FINISHED")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("status, tags, state", [
    # Runs written before raysweep.state existed: the MLflow status and early_stopped tell.
    ("FINISHED", {"raysweep.early_stopped": "True"}, TrialState.STOPPED_EARLY),
    ("FINISHED", {"raysweep.early_stopped": "False"}, TrialState.FINISHED),
    ("FINISHED", {}, TrialState.FINISHED),
    ("FAILED", {"raysweep.early_stopped": "False"}, TrialState.FAILED),
    ("KILLED", {}, TrialState.KILLED),
    ("RUNNING", {}, TrialState.RUNNING),
    ("SCHEDULED", {}, TrialState.KILLED),
    # raysweep.state, when there, is the state.
    ("FINISHED", {"raysweep.state": "STOPPED_EARLY", "raysweep.early_stopped": "True"}, TrialState.STOPPED_EARLY),
    ("FINISHED", {"raysweep.state": "FINISHED", "raysweep.early_stopped": "True"}, TrialState.FINISHED),
    ("FAILED", {"raysweep.state": "FAILED"}, TrialState.FAILED),
    ("KILLED", {"raysweep.state": "KILLED"}, TrialState.KILLED),
    ("FINISHED", {"raysweep.state": "NOT_A_STATE", "raysweep.early_stopped": "True"}, TrialState.STOPPED_EARLY),
    # A close cut between its tags and its status (the driver lost): still running, to be closed again.
    ("RUNNING", {"raysweep.state": "FINISHED"}, TrialState.RUNNING),
])
def test_trial_state_from_run(status, tags, state) -> None:
    assert TrialState.from_run(status, tags) is state


def test_trial_state_round_trips_through_its_mlflow_status_and_tags() -> None:
    for state in TrialState:
        tags = {"raysweep.state": state.name, "raysweep.early_stopped": str(state is TrialState.STOPPED_EARLY)}
        assert TrialState.from_run(state.mlflow_status, tags) is state
        assert TrialState.from_run(state.mlflow_status, {"raysweep.early_stopped": tags["raysweep.early_stopped"]}) \
            is state, "a run without raysweep.state reads back the same"
    assert {s for s in TrialState if s.ended_well} == {TrialState.FINISHED, TrialState.STOPPED_EARLY}


def test_a_trial_run_again_after_a_resume_is_running_again(tmp_path):
    """A sweep closed KILLED, then resumed: Tune starts its lost trial again, which is
    RUNNING again (state and MLflow) until it ends."""
    from raysweep.tracking.callbacks import SweepTracker
    from raysweep.tracking.store import RunStore
    from raysweep.tracking.trials import TrialState

    store = RunStore(f"sqlite:///{tmp_path}/mlflow.db", "exp")
    parent = store.open("sweep/s", "s")
    first = SweepTracker(store, "s", parent, "val_loss", "min", 2, echo=False)
    first.trial_started("t", {"lr": 0.1})
    first.close("KILLED")
    assert store.client.get_run(first.trials["t"].run_id).info.status == "KILLED"
    resumed = SweepTracker(store, "s", store.open("sweep/s", "s"), "val_loss", "min", 2, echo=False)
    resumed.load_existing()
    resumed.trial_started("t", {"lr": 0.1})
    record = resumed.trials["t"]
    assert record.state is TrialState.RUNNING and record.ended is None
    assert store.client.get_run(record.run_id).info.status == "RUNNING"
    resumed.trial_result("t", {"lr": 0.1}, {"epoch": 1, "val_loss": 0.5})
    resumed.trial_completed("t", {"lr": 0.1})
    assert resumed.trials["t"].state is TrialState.FINISHED


def test_a_retried_trial_says_so_and_counts_its_failures(store, capsys) -> None:
    """A trial Tune runs again after a failure (failure.max_failures): one line with its
    cause, `raysweep.failures` on its run, and it stays one run that can still finish."""
    parent_id = store.open("sweep/sweep-1", "sweep-1")
    t = new_tracker(store, parent_id)
    t.trial_started("a", CONFIGS["a"])
    t.trial_result("a", CONFIGS["a"], report(0, 0.9))
    t.trial_retried("a", CONFIGS["a"], 1, "node 10.0.0.2 died")
    t.trial_started("a", CONFIGS["a"])
    t.trial_result("a", CONFIGS["a"], report(1, 0.6))
    t.trial_completed("a", CONFIGS["a"])
    out = capsys.readouterr().out
    assert "[a] failed (node 10.0.0.2 died); retrying from its latest checkpoint (failure 1)" in out
    client = MlflowClient(store.uri)
    (run,) = [r for r in client.search_runs([client.get_experiment_by_name("exp").experiment_id])
              if r.info.run_id != parent_id]
    assert run.data.tags["raysweep.failures"] == "1" and run.info.status == "FINISHED"


def test_a_preempted_trial_is_told_apart_from_a_failed_one(store, capsys) -> None:
    """Tune runs a trial again after its node was taken away under a drain notice
    without counting a failure (num_failures stays); the callback says which it was: a
    preemption line and no `raysweep.failures` tag, then, for a real failure, the
    failure line with its count."""
    from types import SimpleNamespace

    from raysweep.driver.sweep import TrackerCallback

    parent_id = store.open("sweep/sweep-1", "sweep-1")
    callback = TrackerCallback(new_tracker(store, parent_id))
    trial = SimpleNamespace(trial_id="a", config=CONFIGS["a"], num_failures=0, error_file=None)
    callback.on_trial_start(0, [], trial)
    callback.on_trial_recover(1, [], trial)
    out = capsys.readouterr().out
    assert "[a] its node was taken away (unknown error); running again on another node" in out
    assert "not counted in failure.max_failures" in out and "failure 1" not in out
    (run_id,) = [r.run_id for r in callback.tracker.trials.values()]
    assert "raysweep.failures" not in store.client.get_run(run_id).data.tags
    trial.num_failures = 1
    callback.on_trial_recover(2, [], trial)
    assert "[a] failed (unknown error); retrying from its latest checkpoint (failure 1)" in capsys.readouterr().out
    assert store.client.get_run(run_id).data.tags["raysweep.failures"] == "1"


def test_resource_hours_count_every_stretch_a_trial_held_its_workers(monkeypatch) -> None:
    """A trial run in two stretches (a sweep stopped and resumed) counts both; the time
    between them does not. budget.max_gpu_hours stops the sweep on that count."""
    import warnings

    from raysweep.driver.sweep import SweepBudget
    from raysweep.tracking.trials import SweepState, TrialRecord

    clock = [1000.0]
    monkeypatch.setattr("raysweep.tracking.trials.time.time", lambda: clock[0])
    state = SweepState("val_loss", "min", 2)
    record = state.add(TrialRecord("t1", "r1", {}, running_since=clock[0]))
    clock[0] += 1800  # 30 min running
    record.stop_holding()
    clock[0] += 7200  # stopped 2 h: not counted
    record.running_since = clock[0]
    clock[0] += 900  # 15 min into its second stretch
    assert record.held_now() == pytest.approx(2700)
    assert state.resource_hours(2.0) == pytest.approx(1.5)  # 0.75 h x 2 GPUs
    budget = SweepBudget(None, None, lambda: 0, max_gpu_hours=1.5, gpu_hours=lambda: state.resource_hours(2.0))
    with warnings.catch_warnings(record=True):  # (no Tune interrupt handler in this process: it warns)
        warnings.simplefilter("always")
        budget.on_step_begin(0, [])
    assert budget.reason == "budget.max_gpu_hours (1.5 GPU-hours) reached"
    short = SweepBudget(None, None, lambda: 0, max_gpu_hours=1.6, gpu_hours=lambda: state.resource_hours(2.0))
    short.on_step_begin(0, [])
    assert short.reason is None


def test_an_epoch_budget_stops_new_trials_and_cuts_only_trials_with_epochs_left() -> None:
    """budget.total_epochs: spent, no new trial may start; the sweep is stopped only
    while a trial still has epochs to train (one past its last epoch is ending), so a
    budget spent by the last epochs of the last trials ends the sweep as done."""
    import types
    import warnings

    from raysweep.driver.sweep import SweepBudget
    from raysweep.tracking.trials import SweepState, TrialRecord

    state = SweepState("val_loss", "min", 2)
    state.add(TrialRecord("a", "r1", {}, history=[{"epoch": 0.0}, {"epoch": 1.0}]))
    record = state.add(TrialRecord("b", "r2", {}, history=[{"epoch": 0.0}]))
    state.result("b", {"epoch": 0.0, "val_loss": 0.5})  # (logged again by a continued trial: counted once)
    assert state.epochs_spent() == 3 and len(record.history) == 1

    def trial(status: str, epochs_completed: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(status=status, last_result={"epochs_completed": epochs_completed})

    def budget(total: int) -> SweepBudget:
        return SweepBudget(None, None, lambda: 0, total_epochs=total, epochs=state.epochs_spent, max_epochs=2)

    assert budget(4).may_start()
    ending = budget(3)
    assert not ending.may_start()
    ending.on_step_begin(0, [trial("TERMINATED", 2), trial("RUNNING", 2)])
    assert ending.reason is None  # (b's last epoch is in: it is ending, not cut)
    cut = budget(3)
    with warnings.catch_warnings(record=True):  # (no Tune interrupt handler in this process: it warns)
        warnings.simplefilter("always")
        cut.on_step_begin(0, [trial("TERMINATED", 2), trial("RUNNING", 1)])
    assert cut.reason == "budget.total_epochs (3) spent"
