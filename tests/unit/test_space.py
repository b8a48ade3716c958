"""The spec's space as Optuna distributions, checked without a study and with one."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from raysweep.config.space import to_optuna_space
from raysweep.config.spec import Spec

SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
    "hidden": {"type": "int", "low": 16, "high": 256, "log": True},
    "layers": {"type": "int", "low": 1, "high": 5, "step": 2},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
}


def _space():
    spec = Spec.model_validate({
        "name": "s", "trainer": "trainers.digits_mlp",
        "data": {"train": "t", "validation": "v", "features": ["x"], "label": "y"},
        "space": SPACE, "scheduler": {"max_epochs": 2}, "budget": {"num_trials": 1},
    })
    return to_optuna_space(spec.space)


def test_distributions_match_the_spec() -> None:
    space = _space()
    assert space["lr"] == FloatDistribution(1e-4, 0.1, log=True)
    assert space["dropout"] == FloatDistribution(0.0, 0.5, step=0.1)
    assert space["hidden"] == IntDistribution(16, 256, log=True)
    assert space["layers"] == IntDistribution(1, 5, step=2)
    assert space["optimizer"] == CategoricalDistribution(["adam", "sgd"])


def test_study_ask_samples_inside_bounds() -> None:
    space = _space()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(20):
        trial = study.ask(space)
        assert 1e-4 <= trial.params["lr"] <= 0.1
        assert trial.params["layers"] in (1, 3, 5)
        assert 16 <= trial.params["hidden"] <= 256
        study.tell(trial, trial.params["lr"])


def test_study_journal_stays_local_when_the_sweep_folder_is_a_uri(tmp_path, monkeypatch) -> None:
    from raysweep.tracking.study import study_dir

    monkeypatch.setenv("RAYSWEEP_BASE_DIR", str(tmp_path))
    assert study_dir("/runs/exp/sweep-1", "exp") == "/runs/exp/sweep-1"
    assert study_dir("s3://bucket/runs/exp/sweep-1", "exp") == str(tmp_path / "results/exp/sweep-1")
