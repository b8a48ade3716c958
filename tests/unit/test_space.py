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


# ---------------------------------------------------------------- conditional spaces, samplers

import pytest  # noqa: E402

from raysweep.config.load import validate_spec  # noqa: E402
from raysweep.config.space import DefineByRun, first_values, search_space  # noqa: E402
from raysweep.config.spec import SamplerSpec  # noqa: E402
from raysweep.driver.sweep import make_sampler  # noqa: E402
from raysweep.errors import UserInputError  # noqa: E402

# (momentum declared before the param its condition names: drawn after it all the same)
CONDITIONAL = {
    "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": "sgd"}},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
    "beta": {"type": "float", "low": 0.8, "high": 0.999, "when": {"optimizer": ["adam", "rmsprop"]}},
    "x": {"type": "float", "low": -2.0, "high": 2.0},
}


def _spec(space, **extra):
    return Spec.model_validate({
        "name": "s", "trainer": "trainers.digits_mlp",
        "data": {"train": "t", "validation": "v", "features": ["x"], "label": "y"},
        "space": space, "scheduler": {"max_epochs": 2}, "budget": {"num_trials": 1}, **extra})


def _objective(space_fn):
    def objective(trial):
        space_fn(trial)
        p = trial.params
        return (p["x"] - 0.5) ** 2 + (0.3 if p["optimizer"] == "sgd" else 0.0) + (p.get("momentum", 0.9) - 0.9) ** 2
    return objective


def _checked(study):
    """Every trial drew exactly the params whose conditions held."""
    for t in study.trials:
        assert ("momentum" in t.params) == (t.params["optimizer"] == "sgd"), t.params
        assert ("beta" in t.params) == (t.params["optimizer"] != "sgd"), t.params
        assert -2.0 <= t.params["x"] <= 2.0
    return study


def test_a_flat_space_stays_plain_distributions_a_conditional_one_is_define_by_run() -> None:
    assert isinstance(search_space(_spec(SPACE)), dict)
    assert isinstance(search_space(_spec(CONDITIONAL)), DefineByRun)
    assert isinstance(search_space(_spec(SPACE, space_function="trainers.digits_mlp:layer_widths")), DefineByRun)


def test_conditional_params_are_drawn_only_where_their_condition_holds() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(_objective(DefineByRun(_spec(CONDITIONAL).space)), n_trials=40)
    drawn = {t.params["optimizer"] for t in _checked(study).trials}
    assert drawn == {"adam", "sgd", "rmsprop"}
    assert first_values(_spec(CONDITIONAL).space) == {"optimizer": "adam", "beta": 0.8, "x": -2.0}


def test_a_space_function_draws_what_yaml_cannot_say() -> None:
    space = {"num_layers": {"type": "categorical", "choices": [1, 2, 3]}}
    run = DefineByRun(_spec(space).space, "trainers.digits_mlp:layer_widths")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: run(t) or 0.0, n_trials=20)
    for t in study.trials:
        widths = sorted(k for k in t.params if k.startswith("hidden_"))
        assert widths == [f"hidden_{i}" for i in range(t.params["num_layers"])]
        assert all(16 <= t.params[k] <= 256 for k in widths)
    import pickle  # Tune stores the searcher, and this function object with it
    assert pickle.loads(pickle.dumps(run)).function == "trainers.digits_mlp:layer_widths"


SAMPLERS = {
    "tpe": ({"type": "tpe", "n_startup_trials": 4}, optuna.samplers.TPESampler),
    "tpe-grouped": ({"type": "tpe", "n_startup_trials": 4, "multivariate": True, "group": True},
                    optuna.samplers.TPESampler),
    "random": ({"type": "random"}, optuna.samplers.RandomSampler),
    "gp": ({"type": "gp", "n_startup_trials": 4}, optuna.samplers.GPSampler),
    "cmaes": ({"type": "cmaes", "n_startup_trials": 4}, optuna.samplers.CmaEsSampler),
    "nsga2": ({"type": "nsga2", "population_size": 4}, optuna.samplers.NSGAIISampler),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_each_sampler_searches_a_tiny_conditional_space(name) -> None:
    options, kind = SAMPLERS[name]
    sampler = make_sampler(SamplerSpec.model_validate({**options, "seed": 3}))
    assert type(sampler) is kind
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective(DefineByRun(_spec(CONDITIONAL).space)), n_trials=16)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in _checked(study).trials)
    # The same seed draws the same trials (a resumed or re-run sweep is reproducible).
    again = optuna.create_study(sampler=make_sampler(SamplerSpec.model_validate({**options, "seed": 3})))
    again.optimize(_objective(DefineByRun(_spec(CONDITIONAL).space)), n_trials=16)
    assert [t.params for t in again.trials] == [t.params for t in study.trials]


def test_grouped_tpe_learns_within_each_branch() -> None:
    """On the tiny space, grouped TPE's best after 30 trials beats random search's (same seed)."""
    best = {}
    for kind in ("tpe-grouped", "random"):
        study = optuna.create_study(sampler=make_sampler(SamplerSpec.model_validate({**SAMPLERS[kind][0], "seed": 0})))
        study.optimize(_objective(DefineByRun(_spec(CONDITIONAL).space)), n_trials=30)
        best[kind] = study.best_value
    assert best["tpe-grouped"] < best["random"], best


@pytest.mark.parametrize("when, field, words", [
    ({"optimzer": "sgd"}, "space.momentum.when.optimzer", "not another searched param"),
    ({"x": 1.0}, "space.momentum.when.x", "a condition names a categorical param; x is float"),
    ({"optimizer": "sdg"}, "space.momentum.when.optimizer", "'sdg' is not one of optimizer's choices"),
    ({"momentum": 0.5}, "space.momentum.when.momentum", "not another searched param"),
])
def test_a_bad_condition_is_one_line_naming_the_field(when, field, words) -> None:
    space = {**CONDITIONAL, "momentum": {**CONDITIONAL["momentum"], "when": when}}
    with pytest.raises(UserInputError) as err:
        validate_spec(_spec_dict(space), "spec.yaml")
    assert str(err.value).startswith(f"spec.yaml: {field}: ") and words in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_conditions_in_a_cycle_are_refused() -> None:
    space = {"a": {"type": "categorical", "choices": [1, 2], "when": {"b": "u"}},
             "b": {"type": "categorical", "choices": ["u", "v"], "when": {"a": 1}}}
    cycle = r"^spec.yaml: space\.a\.when: the conditions form a cycle \(a -> b -> a\)$"
    with pytest.raises(UserInputError, match=cycle):
        validate_spec(_spec_dict(space), "spec.yaml")


@pytest.mark.parametrize("sampler, message", [
    ({"type": "random", "multivariate": True}, "sampler: multivariate is a tpe option, the sampler is random"),
    ({"type": "tpe", "multivariate": False, "group": True}, "sampler: group needs type: tpe"),
    ({"type": "gp", "population_size": 8}, "sampler: population_size is an nsga2 option, the sampler is gp"),
    ({"type": "bayes"}, "sampler.type: Input should be 'tpe', 'random', 'gp', 'cmaes' or 'nsga2'"),
])
def test_sampler_options_of_another_sampler_are_refused(sampler, message) -> None:
    with pytest.raises(UserInputError) as err:
        validate_spec(_spec_dict(SPACE, sampler=sampler), "spec.yaml")
    assert str(err.value).startswith(f"spec.yaml: {message}"), str(err.value)


def _spec_dict(space, **extra):
    return {"name": "s", "trainer": "trainers.digits_mlp",
            "data": {"train": "t", "validation": "v", "features": ["x"], "label": "y"},
            "space": space, "scheduler": {"max_epochs": 2}, "budget": {"num_trials": 1}, **extra}


def test_a_job_keeps_the_journal_out_of_its_per_job_working_dir(tmp_path, monkeypatch) -> None:
    """A Ray job's working dir is per job (and Ray unpacks it again): a later job that
    resumes the sweep must find the same local journal path."""
    from raysweep.tracking.study import study_dir

    monkeypatch.setenv("RAYSWEEP_STATE_DIR", str(tmp_path / "state"))
    for job in ("_ray_pkg_aaaa", "_ray_pkg_bbbb"):
        monkeypatch.setenv("RAYSWEEP_BASE_DIR", f"/tmp/ray/session_1/runtime_resources/working_dir_files/{job}")
        assert study_dir("s3://bucket/runs/exp/sweep-1", "exp") == str(tmp_path / "state/journals/exp/sweep-1")


def test_drawable_agrees_with_optunas_own_check():
    """tracking.study.drawable (a warm start's "does this trial fit the space") decides as
    Optuna's private check does, from public fields."""
    import optuna

    from raysweep.tracking.study import drawable

    dists = [optuna.distributions.FloatDistribution(0.001, 0.1, log=True),
             optuna.distributions.FloatDistribution(0.0, 1.0, step=0.25),
             optuna.distributions.IntDistribution(2, 64, step=2),
             optuna.distributions.IntDistribution(1, 8),
             optuna.distributions.CategoricalDistribution(["adam", "sgd", None, 3])]
    values = [0.001, 0.1, 0.2, 0.0005, 0.25, 0.3, 0.75, 1.0, 2, 3, 64, 65, 8, 0, 9, "adam", "rmsprop", None, 3, 4,
              "x", True]
    checked = 0
    for dist in dists:
        for value in values:
            try:
                expected = dist._contains(dist.to_internal_repr(value))
            except (ValueError, TypeError):
                expected = False
            if isinstance(value, bool) and not isinstance(dist, optuna.distributions.CategoricalDistribution):
                expected = False  # (a bool is no number of a space: Optuna would read True as 1)
            assert drawable(dist, value) == expected, (dist, value)
            checked += expected
    assert checked >= 10  # (the values include many that fit)
