"""A resumed sweep's searcher comes from the Optuna journal alone (no Ray, no Tune
state): the trials an earlier driver left RUNNING are handed out first, under the Tune
ids of the new run but with their own raysweep ids, params and checkpoints; finished
ones are not; then new trials are asked of the study."""

from __future__ import annotations

import optuna
import pytest

from raysweep.config.load import validate_spec
from raysweep.config.space import to_optuna_space
from raysweep.config.spec import SamplerSpec
from raysweep.driver.sweep import _OptunaSearch
from raysweep.driver.trial import RESUME_KEY, trial_identity
from raysweep.tracking.study import TUNE_TRIAL_ATTR, load_study, study_storage

SPEC = {"name": "s", "trainer": "trainers.digits_mlp",
        "data": {"train": "t", "validation": "v", "features": ["x"], "label": "y"},
        "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
                  "width": {"type": "int", "low": 8, "high": 64}},
        "budget": {"num_trials": 4}, "scheduler": {"max_epochs": 2}}


def _searcher(folder) -> _OptunaSearch:
    return _OptunaSearch(space=to_optuna_space(validate_spec(SPEC, "s").space), metric="val_loss", mode="min",
                         sampler=optuna.samplers.RandomSampler(seed=0), study_name="s",
                         storage=study_storage(str(folder)), journal_dir=str(folder),
                         sampler_spec=SamplerSpec(type="random"), max_epochs=2)


def _epoch(epoch: int, loss: float) -> dict:
    return {"epoch": epoch, "epochs_completed": epoch + 1, "val_loss": loss}


def test_a_resumed_searcher_continues_the_unfinished_trials_then_asks_new_ones(tmp_path) -> None:
    first = _searcher(tmp_path)
    drawn = {tid: first.suggest(tid) for tid in ("a", "b", "c")}
    first.on_trial_result("a", _epoch(0, 0.5))
    first.on_trial_result("a", _epoch(1, 0.45))
    first.on_trial_complete("a", _epoch(1, 0.45))
    first.on_trial_result("b", _epoch(0, 0.4))  # (then the driver is lost: b and c stay RUNNING)

    second = _searcher(tmp_path)
    second.from_journal({"a": "/ckpt/a-final", "b": "/ckpt/b-epoch0"})
    assert second.finished == {"a": optuna.trial.TrialState.COMPLETE}
    b, c, d = (second.suggest(tid) for tid in ("new-1", "new-2", "new-3"))
    assert b == {**drawn["b"], RESUME_KEY: {"trial_id": "b", "checkpoint": "/ckpt/b-epoch0"}}
    assert c == {**drawn["c"], RESUME_KEY: {"trial_id": "c", "checkpoint": None}}
    assert RESUME_KEY not in d and d not in drawn.values()
    assert trial_identity(b, "new-1") == ("b", drawn["b"], "/ckpt/b-epoch0")
    assert trial_identity(d, "new-3") == ("new-3", d, None)

    second.on_trial_result("new-1", _epoch(0, 0.4))  # (the epoch after the checkpoint, logged again)
    second.on_trial_result("new-1", _epoch(1, 0.3))
    second.on_trial_complete("new-1", _epoch(1, 0.3))
    trials = {t.user_attrs.get(TUNE_TRIAL_ATTR): t for t in load_study(str(tmp_path), "s").trials}
    assert sorted(trials) == ["a", "b", "c", "new-3"]  # (one Optuna trial per trial: none asked twice)
    assert trials["b"].state == optuna.trial.TrialState.COMPLETE and trials["b"].value == pytest.approx(0.3)
    assert trials["b"].intermediate_values == {0: pytest.approx(0.4), 1: pytest.approx(0.3)}
    assert trials["c"].state == optuna.trial.TrialState.RUNNING


def test_a_trial_the_journal_never_tagged_continues_under_its_new_id(tmp_path) -> None:
    """A driver lost between asking the study and tagging the trial: the trial is
    continued from the start, and tagged with the id it runs under now."""
    study = optuna.create_study(study_name="s", storage=study_storage(str(tmp_path)))
    asked = study.ask({name: dist for name, dist in to_optuna_space(validate_spec(SPEC, "s").space).items()})
    searcher = _searcher(tmp_path)
    searcher.from_journal()
    config = searcher.suggest("new-1")
    assert config == {**asked.params, RESUME_KEY: {"trial_id": "new-1", "checkpoint": None}}
    (stored,) = load_study(str(tmp_path), "s").trials
    assert stored.user_attrs[TUNE_TRIAL_ATTR] == "new-1"
