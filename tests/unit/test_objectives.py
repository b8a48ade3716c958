"""Multi-objective sweeps and constraints without Ray: the spec's rules, the Pareto
front and the best trial a SweepState picks, what the tracker writes to a real sqlite
MLflow store, what the console prints, what the searcher tells its Optuna study, and
a trainer that does not report a needed metric."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from mlflow.tracking import MlflowClient

from raysweep.config.constraints import Constraint
from raysweep.config.load import validate_spec
from raysweep.config.space import to_optuna_space
from raysweep.config.spec import SamplerSpec
from raysweep.driver.sweep import MAX_VIOLATION, _OptunaSearch, make_sampler
from raysweep.errors import UserInputError
from raysweep.tracking import tags as tag
from raysweep.tracking.callbacks import SweepTracker
from raysweep.tracking.console import trials_table
from raysweep.tracking.pareto import dominates, minimized
from raysweep.tracking.store import RunStore
from raysweep.tracking.study import TUNE_TRIAL_ATTR
from raysweep.tracking.trials import SweepState, TrialRecord, TrialState
from raysweep.worker.context import MissingMetricError, TrainContext

OBJECTIVES = [("val_loss", "min"), ("params_count", "min")]


def _spec(**extra):
    return {"name": "s", "trainer": "trainers.digits_mlp",
            "data": {"train": "t", "validation": "v", "features": ["x"], "label": "y"},
            "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1}},
            "budget": {"num_trials": 1}, **extra}


def _scheduler(**extra):
    return {"scheduler": {"max_epochs": 2, **extra}}


@pytest.mark.parametrize("extra, message", [
    (_scheduler(metric=["val_loss", "params_count"], mode="min"),
     "scheduler: metric and mode must both be one value or lists of the same length"),
    (_scheduler(metric=["val_loss", "params_count"], mode=["min"]),
     "scheduler: metric and mode must both be one value or lists of the same length"),
    (_scheduler(metric=["val_loss", "val_loss"], mode=["min", "min"]),
     "scheduler: metric must name each objective once"),
    ({**_scheduler(metric=["val_loss", "params_count"], mode=["min", "min"]), "sampler": {"type": "cmaes"}},
     "sampler.type: cmaes optimizes one objective; scheduler.metric names 2"),
    ({**_scheduler(), "sampler": {"type": "cmaes"}, "constraints": ["params_count <= 10"]},
     "sampler.type: cmaes takes no constraints"),
    ({**_scheduler(), "constraints": ["params_count < 10"]},
     "constraints.0: a constraint reads 'METRIC <= NUMBER' or 'METRIC >= NUMBER' (got 'params_count < 10')"),
    ({**_scheduler(), "constraints": ["val_loss <= 0.5"]}, "constraints: val_loss is an objective"),
])
def test_bad_objectives_and_constraints_are_one_line_naming_the_field(extra, message) -> None:
    with pytest.raises(UserInputError) as err:
        validate_spec(_spec(**extra), "spec.yaml")
    assert str(err.value).startswith(f"spec.yaml: {message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_a_two_objective_spec_keeps_both_and_names_the_first_primary() -> None:
    spec = validate_spec(_spec(**_scheduler(metric=["val_loss", "params_count"], mode=["min", "min"]),
                               constraints=["val_accuracy >= 0.9", "latency_ms <= 5e0"]), "spec.yaml")
    assert spec.scheduler.multi_objective and spec.scheduler.metrics == ["val_loss", "params_count"]
    assert (spec.scheduler.primary, spec.scheduler.primary_mode) == ("val_loss", "min")
    assert [str(c) for c in spec.parsed_constraints()] == ["val_accuracy >= 0.9", "latency_ms <= 5"]


def test_constraint_violation_is_negative_when_met_and_infinite_when_missing() -> None:
    at_most, at_least = Constraint.parse("latency_ms <= 5"), Constraint.parse("val_accuracy >= 0.9")
    assert at_most.violation({"latency_ms": 4.0}) == -1.0 and at_most.violation({"latency_ms": 7.0}) == 2.0
    assert at_least.violation({"val_accuracy": 0.95}) == pytest.approx(-0.05)
    assert at_most.violation({}) == math.inf and at_most.violation({"latency_ms": math.nan}) == math.inf


def _record(trial_id, rows, state=TrialState.FINISHED):
    return TrialRecord(trial_id, f"run-{trial_id}", {"x": trial_id}, history=rows, state=state)


def _rows(*points, accuracy=0.95):
    return [{"epoch": float(i), "val_loss": v, "params_count": p, "val_accuracy": accuracy}
            for i, (v, p) in enumerate(points)]


def test_the_front_is_the_non_dominated_last_epochs_of_feasible_trials() -> None:
    state = SweepState("val_loss", "min", 2, OBJECTIVES, [Constraint.parse("val_accuracy >= 0.9")])
    state.add(_record("small", _rows((0.5, 900), (0.4, 900))))
    state.add(_record("big", _rows((0.3, 5000), (0.2, 5000))))
    state.add(_record("dominated", _rows((0.6, 6000), (0.5, 6000))))
    # Its first epoch would dominate everything: a trial's point is its last epoch.
    state.add(_record("worse_at_the_end", _rows((0.1, 100), (0.9, 100))))
    state.add(_record("infeasible", _rows((0.1, 10), (0.1, 10), accuracy=0.5)))
    state.add(_record("failed", _rows((0.05, 5)), state=TrialState.FAILED))
    front = [r.trial_id for r in state.front()]
    assert front == ["small", "big", "worse_at_the_end"]
    points = {r.trial_id: minimized(r.history[-1], ["val_loss", "params_count"], ["min", "min"])
              for r in state.trials.values()}
    assert not any(dominates(points[a], points[b]) for a in front for b in front)
    assert all(any(dominates(points[f], points[o]) for f in front) for o in ["dominated"])
    assert state.best_trial().trial_id == "big"  # (the front's best first objective)
    assert state.pick("params_count").trial_id == "worse_at_the_end"
    with pytest.raises(ValueError, match="--pick val_accuracy: not an objective"):
        state.pick("val_accuracy")
    assert state.feasible(state.trials["infeasible"]) is False and state.feasible(state.trials["big"]) is True
    table = trials_table(state, ["x"])
    lines = {line.split()[0]: line for line in table.splitlines()[2:]}
    assert lines["infeasible"].split()[-3] == "NO" and lines["big"].split()[-4] == "*"
    assert "*" not in lines["dominated"]


def test_with_one_objective_the_best_is_the_best_epoch_that_meets_the_constraints() -> None:
    state = SweepState("val_loss", "min", 3, constraints=[Constraint.parse("params_count <= 1000")])
    state.add(_record("a", _rows((0.5, 900), (0.3, 900))))
    state.add(_record("b", _rows((0.1, 5000), (0.05, 5000))))  # better, but too big
    assert state.best_trial().trial_id == "a" and state.best_so_far == ("a", 0.3)
    assert not state.result("b", {"epoch": 2.0, "val_loss": 0.01, "params_count": 5000.0})


def test_the_tracker_writes_the_front_and_feasibility_to_mlflow(tmp_path) -> None:
    store = RunStore(f"sqlite:///{tmp_path}/mlflow.db", "exp")
    parent = store.open("sweep/s", "s")
    tracker = SweepTracker(store, "s", parent, "val_loss", "min", 2, echo=False, objectives=OBJECTIVES,
                           constraints=[Constraint.parse("val_accuracy >= 0.9")])
    for trial_id, rows in {"small": _rows((0.5, 900), (0.4, 900)), "big": _rows((0.3, 5000), (0.2, 5000)),
                           "weak": _rows((0.3, 5000), (0.2, 6000), accuracy=0.5)}.items():
        tracker.trial_started(trial_id, {"x": trial_id})
        for row in rows:
            tracker.trial_result(trial_id, {"x": trial_id}, {**row, "epochs_completed": int(row["epoch"]) + 1})
        tracker.trial_completed(trial_id, {"x": trial_id})
    tracker.close("FINISHED")
    mlflow = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    tags = mlflow.get_run(parent).data.tags
    front = json.loads(tags[tag.PARETO_FRONT])
    assert [m["trial_id"] for m in front] == ["small", "big"]
    assert front[0]["params_count"] == 900 and front[1]["val_loss"] == 0.2
    assert json.loads(tags[tag.OBJECTIVES]) == [list(o) for o in OBJECTIVES]
    assert tags[tag.BEST_TRIAL_ID] == "big"
    artifact = mlflow.download_artifacts(parent, "pareto_front.json", str(tmp_path))
    assert json.loads(open(artifact).read()) == front
    weak = tracker.trials["weak"].run_id
    assert mlflow.get_run(weak).data.tags[tag.FEASIBLE] == "False"
    assert json.loads(mlflow.get_run(weak).data.tags[tag.CONSTRAINT_VIOLATIONS]) == \
        {"val_accuracy >= 0.9": pytest.approx(0.4)}
    assert mlflow.get_run(tracker.trials["big"].run_id).data.tags[tag.FEASIBLE] == "True"


def _searcher(tmp_path, metric, mode, constraints=()):
    from raysweep.tracking.study import study_storage

    searcher = _OptunaSearch(space=to_optuna_space(validate_spec(_spec(**_scheduler()), "s").space),
                             metric=metric, mode=mode, sampler=optuna.samplers.RandomSampler(seed=0),
                             study_name="s", storage=study_storage(str(tmp_path)), journal_dir=str(tmp_path),
                             sampler_spec=SamplerSpec(type="random"), max_epochs=2, constraints=constraints)
    return searcher


def test_the_searcher_tells_every_objective_and_the_constraint_violations(tmp_path) -> None:
    searcher = _searcher(tmp_path, ["val_loss", "params_count"], ["min", "min"],
                         [Constraint.parse("val_accuracy >= 0.9")])
    for trial_id, epochs, accuracy in [("done", 2, 0.95), ("stopped", 1, 0.99), ("bad", 2, 0.5)]:
        searcher.suggest(trial_id)
        result = {}
        for epoch in range(epochs):
            result = {"epoch": epoch, "epochs_completed": epoch + 1, "val_loss": 0.5 - epoch / 10,
                      "params_count": 100.0, "val_accuracy": accuracy}
            searcher.on_trial_result(trial_id, result)
        searcher.on_trial_complete(trial_id, result)
    trials = {t.user_attrs[TUNE_TRIAL_ATTR]: t for t in searcher._ot_study.trials}
    assert trials["done"].state == optuna.trial.TrialState.COMPLETE and trials["done"].values == [0.4, 100.0]
    assert trials["stopped"].state == optuna.trial.TrialState.PRUNED  # (ASHA stopped it after 1 of 2 epochs)
    assert trials["done"].constraints == {"val_accuracy >= 0.9": pytest.approx(-0.05)}
    assert trials["bad"].constraints == {"val_accuracy >= 0.9": pytest.approx(0.4)}


def test_a_trial_that_never_reported_a_constrained_metric_counts_as_far_outside(tmp_path) -> None:
    searcher = _searcher(tmp_path, "val_loss", "min", [Constraint.parse("latency_ms <= 5")])
    searcher.suggest("t")
    searcher.on_trial_result("t", {"epoch": 0, "epochs_completed": 1, "val_loss": 0.5})
    searcher.on_trial_complete("t", {"epoch": 0, "epochs_completed": 1, "val_loss": 0.5}, error=True)
    (trial,) = searcher._ot_study.trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.constraints == {"latency_ms <= 5": MAX_VIOLATION}


@pytest.mark.parametrize("kind", ["tpe", "gp"])
def test_samplers_learn_the_constraints(kind) -> None:
    """Told each trial's constraint value (as _OptunaSearch does), the sampler's best
    feasible trial beats random search's on a problem whose free optimum is infeasible."""
    def objective(trial):
        x = trial.suggest_float("x", -3, 3)
        trial.set_constraint("x <= 1", x - 1.0)
        return (x - 2.0) ** 2

    options = {"tpe": {"n_startup_trials": 5}, "gp": {"n_startup_trials": 5}}
    found = {}
    for name, spec in ((kind, SamplerSpec(type=kind, seed=0, **options[kind])), ("random", SamplerSpec(type="random"))):
        study = optuna.create_study(sampler=make_sampler(spec))
        study.optimize(objective, n_trials=30)
        found[name] = min(t.value for t in study.trials if t.constraints["x <= 1"] <= 0)
    assert found[kind] <= found["random"] and found[kind] < 1.1, found


def test_a_needed_metric_the_trainer_does_not_report_fails_the_run_naming_it() -> None:
    ctx, _ = TrainContext.in_process(None, None, {}, 1)  # type: ignore[arg-type]
    ctx.required_metrics = {"latency_ms": "constraint 'latency_ms <= 5'", "val_loss": "scheduler.metric"}
    with pytest.raises(MissingMetricError, match=r"^constraint 'latency_ms <= 5' names metric 'latency_ms', which "
                                                 r"the trainer does not report \(it reports: epoch, val_loss\)$"):
        ctx.report({"epoch": 0, "val_loss": 0.5})
