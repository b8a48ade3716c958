"""sampler.rungs: the sampler is fitted on every trial's value at one rung (BOHB's rule),
through Optuna's public API, and learns from trials that early stopping ended."""

from __future__ import annotations

import statistics

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from raysweep.config.spec import SamplerSpec, Spec
from raysweep.driver.rung_sampler import RungSampler, rung_of, rung_view
from raysweep.driver.sweep import make_sampler

X = {"x": FloatDistribution(0.0, 1.0)}


def _trial(x: float, curve: list[float], state: TrialState = TrialState.PRUNED) -> optuna.trial.FrozenTrial:
    """A trial with `curve[i]` reported at epoch i + 1; COMPLETE ends with its last value."""
    return create_trial(params={"x": x}, distributions=X, state=state,
                        value=curve[-1] if state == TrialState.COMPLETE else None,
                        intermediate_values={epoch: v for epoch, v in enumerate(curve, start=1)})


def _study(trials: list[optuna.trial.FrozenTrial], sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    study = optuna.create_study(sampler=sampler)
    study.add_trials(trials)
    return study


def _misled() -> list[optuna.trial.FrozenTrial]:
    """Three trials ran to the end (8 epochs) near x = 0.9, where the loss is high; twelve
    were stopped at their first epoch, and among those the loss is lowest near x = 0.2.
    A sampler that ranks every stopped trial below every finished one (TPE on how
    trials ended) learns from the three; one fitted at epoch 1 learns from all fifteen."""
    finished = [_trial(x, [0.9] * 8, TrialState.COMPLETE) for x in (0.85, 0.9, 0.95)]
    stopped = [_trial(x, [0.3 + abs(x - 0.2)]) for x in (0.05, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.55, 0.6, 0.7,
                                                         0.75, 0.8)]
    return finished + stopped


def _draws(sampler: optuna.samplers.BaseSampler, n: int = 20) -> list[float]:
    study = _study(_misled(), sampler)
    return [study.ask(X).params["x"] for _ in range(n)]


def test_the_rung_is_the_latest_epoch_enough_trials_reached() -> None:
    trials = [_trial(0.1, [1.0]), _trial(0.2, [1.0, 0.9, 0.8]), _trial(0.3, [1.0] * 8, TrialState.COMPLETE)]
    assert rung_of(trials, 1) == 8
    assert rung_of(trials, 2) == 3
    assert rung_of(trials, 3) == 1
    assert rung_of(trials, 4) is None


def test_the_view_holds_each_trial_at_the_rung_with_its_value_there() -> None:
    trials = [_trial(0.1, [0.7]), _trial(0.2, [0.6, 0.5, 0.4]), _trial(0.3, [0.9, 0.8, 0.3, 0.2], TrialState.COMPLETE),
              create_trial(params={"x": 0.4}, distributions=X, state=TrialState.FAIL)]
    study = _study(trials, optuna.samplers.RandomSampler(seed=0))
    rung, view, _ = rung_view(study, min_trials=2)
    assert rung == 3
    assert [(t.params["x"], t.value, t.state) for t in view.trials] == [
        (0.2, 0.4, TrialState.COMPLETE), (0.3, 0.3, TrialState.COMPLETE)]
    rung, view, _ = rung_view(study, min_trials=3)
    assert rung == 1 and sorted(t.value for t in view.trials) == [0.6, 0.7, 0.9]
    assert rung_view(study, min_trials=4) == (None, study, None)


def test_the_inner_sampler_receives_every_rung_value() -> None:
    seen: list[list[tuple[float, float]]] = []

    class Recording(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, distribution):  # type: ignore[no-untyped-def]
            seen.append(sorted((t.params["x"], t.value) for t in study.trials if t.state == TrialState.COMPLETE))
            return super().sample_independent(study, trial, name, distribution)

    sampler = RungSampler(lambda seed: Recording(seed=seed), min_trials=4)
    study = _study(_misled(), sampler)
    study.ask(X)
    expected = sorted((t.params["x"], t.intermediate_values[1]) for t in _misled())
    assert seen == [expected]
    assert sampler.rungs_used == {15: 1}


def test_learning_from_rungs_finds_what_the_stopped_trials_showed() -> None:
    def tpe(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)

    plain = _draws(tpe(0))
    rungs = _draws(RungSampler(tpe, min_trials=4, seed=0))
    # (TPE on how trials ended: its best trials are the three that finished, near 0.9)
    assert statistics.median(plain) > 0.6, plain
    assert statistics.median(rungs) < 0.4, rungs


def test_the_start_up_draws_what_the_plain_sampler_draws() -> None:
    draws = []
    for rungs in (False, True):
        study = optuna.create_study(sampler=make_sampler(SamplerSpec(type="tpe", seed=3, n_startup_trials=4,
                                                                     rungs=rungs)))
        for _ in range(4):  # (each ends at epoch 0: no epoch has 4 finished trials before the fourth)
            trial = study.ask(X)
            trial.report(trial.params["x"], 0)
            study.tell(trial, state=TrialState.PRUNED)
        draws.append([t.params["x"] for t in study.trials])
    assert draws[0] == draws[1]


def test_the_same_seed_draws_the_same_params() -> None:
    spec = SamplerSpec(type="tpe", seed=3, n_startup_trials=4, rungs=True)
    first, again = (_draws(make_sampler(spec), n=5) for _ in range(2))
    assert first == again
    assert first != _draws(make_sampler(spec.model_copy(update={"seed": 4})), n=5)


def _spec(**sections: object) -> Spec:
    return Spec.model_validate({
        "name": "s", "trainer": "trainers.digits_mlp",
        "data": {"train": "t", "validation": "v", "features": ["x"], "label": "y"},
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 0.1}}, "budget": {"num_trials": 1},
        "scheduler": {"max_epochs": 4}, **sections})


def test_rungs_are_off_unless_asked_for() -> None:
    assert not _spec().sampler.rungs
    assert _spec(sampler={"rungs": True}, scheduler={"type": "hyperband", "max_epochs": 4}).sampler.rungs
    assert isinstance(make_sampler(_spec(sampler={"rungs": True}).sampler), RungSampler)
    assert isinstance(make_sampler(_spec().sampler), optuna.samplers.TPESampler)


@pytest.mark.parametrize("sections, says", [
    ({"sampler": {"type": "random", "rungs": True}}, "rungs is a tpe option"),
    ({"sampler": {"rungs": True}, "scheduler": {"metric": ["val_loss", "params_count"], "mode": ["min", "min"],
                                                "max_epochs": 4}}, "sampler.rungs: Optuna keeps no per-epoch"),
])
def test_rungs_refused_where_they_cannot_apply(sections: dict, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        _spec(**sections)


def test_running_trials_stay_in_the_view_for_the_constant_liar() -> None:
    study = _study(_misled(), optuna.samplers.RandomSampler(seed=0))
    other, current = study.ask(X), study.ask()
    frozen = study.get_trials(deepcopy=False)
    _, view, stand_in = rung_view(study, 4, frozen[current.number])
    running = view.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert [t.params for t in running] == [other.params, {}]
    assert stand_in is not None and stand_in.number == running[-1].number


def test_a_sweeps_searcher_tells_which_rung_each_trial_was_drawn_from(tmp_path) -> None:
    """Through the sweep's searcher on a journal (no Ray): two trials ASHA stopped after
    epochs 0 and 1, then a third is drawn from epoch 1's values, and the journal says so."""
    from raysweep.config.space import to_optuna_space
    from raysweep.driver.sweep import _OptunaSearch
    from raysweep.tracking.study import RUNG_ATTR, TUNE_TRIAL_ATTR, load_study, study_storage

    spec = _spec(sampler={"n_startup_trials": 2, "rungs": True}, scheduler={"max_epochs": 4})
    searcher = _OptunaSearch(space=to_optuna_space(spec.space), metric="val_loss", mode="min",
                             sampler=make_sampler(spec.sampler), study_name="s",
                             storage=study_storage(str(tmp_path)), journal_dir=str(tmp_path),
                             sampler_spec=spec.sampler, max_epochs=4)
    for tid, losses in (("a", [0.9, 0.8]), ("b", [0.7, 0.5])):
        searcher.suggest(tid)
        for epoch, loss in enumerate(losses):
            searcher.on_trial_result(tid, {"epoch": epoch, "epochs_completed": epoch + 1, "val_loss": loss})
        searcher.on_trial_complete(tid, {"epoch": 1, "epochs_completed": 2, "val_loss": losses[-1]})
    searcher.suggest("c")
    trials = {t.user_attrs[TUNE_TRIAL_ATTR]: t for t in load_study(str(tmp_path), "s").trials}
    assert trials["a"].state == trials["b"].state == TrialState.PRUNED
    assert {k: t.user_attrs[RUNG_ATTR] for k, t in trials.items()} == {"a": None, "b": None, "c": 1}
