"""Spec loading and the one-line errors bad input gets (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raysweep.config.load import apply_overrides, load_spec
from raysweep.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]


def test_example_spec_loads() -> None:
    spec = load_spec(REPO / "search_spaces" / "digits_mlp.yaml")
    assert spec.budget.num_trials >= 8
    assert spec.scaling.num_workers == 1 and spec.scaling.worker_group == "auto"
    assert spec.sampler.type == "tpe"
    assert spec.scheduler.type == "asha"
    assert set(spec.space) == {"lr", "hidden", "optimizer"}


def test_set_overrides_nested_fields_with_yaml_values(write_spec) -> None:
    path = write_spec()
    spec = load_spec(path, ["budget.num_trials=7", "space.lr.high=0.9", "params.new=abc"])
    assert spec.budget.num_trials == 7
    assert spec.space["lr"].high == 0.9
    assert spec.params["new"] == "abc"


@pytest.mark.parametrize("budget", [{"total_epochs": 64}, {"max_hours": 8}, {"max_gpu_hours": 40, "num_trials": 100}])
def test_a_resource_budget_needs_no_trial_count(write_spec, budget) -> None:
    scaling = ["scaling.gpus_per_worker=1"] if "max_gpu_hours" in budget else []
    spec = load_spec(write_spec(budget=budget), scaling)
    assert spec.budget.num_trials == budget.get("num_trials")


def test_overrides_do_not_touch_the_input() -> None:
    raw = {"a": {"b": 1}}
    assert apply_overrides(raw, ["a.b=2", "c.d=[1, 2]"]) == {"a": {"b": 2}, "c": {"d": [1, 2]}}
    assert raw == {"a": {"b": 1}}


def _mutate(spec: dict, path: str, value) -> dict:
    node = spec
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return spec


BAD = [
    ("unknown top-level key", "colour", "red", "colour: unknown key"),
    ("unknown nested key", "scheduler.patience", 3, "scheduler.patience: unknown key"),
    ("unknown key in a space entry", "space.lr.lo", 1, "space.lr.lo: unknown key"),
    ("wrong type", "budget.num_trials", "many", "budget.num_trials"),
    ("inverted range", "space.lr", {"type": "float", "low": 0.5, "high": 0.1},
     "space.lr: low < high must hold"),
    ("empty range", "space.lr", {"type": "int", "low": 3, "high": 3}, "space.lr: low < high must hold"),
    ("log range from zero", "space.lr", {"type": "float", "low": 0.0, "high": 1.0, "log": True},
     "space.lr: a log range needs low > 0"),
    ("log int range with a step", "space.lr", {"type": "int", "low": 1, "high": 64, "log": True, "step": 2},
     "space.lr: a log range takes step 1 only"),
    ("two NCCL ranks on one GPU", "scaling", {"num_workers": 2, "gpus_per_worker": 0.5},
     "scaling.gpus_per_worker: 2 workers at a fraction of a GPU each could put two NCCL ranks of one run on one "
     "GPU, which NCCL refuses ('invalid usage'); use 1 or more, or one worker per trial to pack trials (got 0.5)"),
    ("unknown param type", "space.lr", {"type": "fancy", "low": 0, "high": 1}, "space.lr"),
    ("zero workers", "scaling.num_workers", 0, "scaling.num_workers"),
    ("negative trials", "budget.num_trials", -1, "budget.num_trials"),
    ("zero trials", "budget.num_trials", 0, "budget.num_trials"),
    ("no end to the sweep", "budget", {"max_concurrent_trials": 2},
     "budget: give num_trials (trials in all) or a resource budget to spend (total_epochs, max_hours or "
     "max_gpu_hours), or both"),
    ("zero epochs in all", "budget.total_epochs", 0, "budget.total_epochs"),
    ("grace beyond max", "scheduler.grace_period", 9, "scheduler: grace_period <= max_epochs"),
    ("empty choices", "space.lr", {"type": "categorical", "choices": []}, "space.lr.choices"),
    ("fsdp in a warm group", "scaling", {"num_workers": 2, "strategy": "fsdp", "worker_group": "warm"},
     "scaling: strategy: fsdp runs in Ray Train worker groups"),
    ("unknown strategy", "scaling.strategy", "zero3", "scaling.strategy"),
    ("shard modules without fsdp", "scaling.shard_modules", ["Block"], "shard_modules: only strategy fsdp"),
    ("plain precision 16-mixed", "scaling.precision", "16-mixed", "scaling.precision"),
    ("zero accumulation", "scaling.accumulate_steps", 0, "scaling.accumulate_steps"),
    ("brackets of asha", "scheduler.brackets", 2, "scheduler: brackets is a hyperband option, the scheduler is"),
    ("too many brackets", "scheduler", {"type": "hyperband", "metric": "val_loss", "max_epochs": 4, "brackets": 4},
     "scheduler: brackets: 4 is more than the 2 that have a rung below max_epochs (4)"),
    ("compile mode", "scaling.compile", "fast", "scaling.compile"),
    ("mid-epoch saves inside an accumulation group", "scaling.accumulate_steps", 3,
     "checkpoint.every_n_steps: 4 is not a multiple of scaling.accumulate_steps (3)"),
]


@pytest.mark.parametrize("case, path, value, expected", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_names_file_and_field(write_spec, tmp_path, case, path, value, expected) -> None:
    good = yaml.safe_load(write_spec().read_text())
    if case.startswith("mid-epoch"):
        good["checkpoint"] = {"every_n_steps": 4}
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text(yaml.safe_dump(_mutate(good, path, value)))
    with pytest.raises(UserInputError) as err:
        load_spec(bad_path)
    message = str(err.value)
    assert message.startswith(f"{bad_path}: ")
    assert expected in message
    assert "\n" not in message


def test_missing_file(tmp_path) -> None:
    with pytest.raises(UserInputError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_yaml_that_does_not_parse(tmp_path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nspace: {lr: [1, 2\n")
    with pytest.raises(UserInputError, match=r"broken.yaml: YAML does not parse at line \d+"):
        load_spec(path)


def test_yaml_that_is_not_a_mapping(tmp_path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(UserInputError, match="expected a mapping"):
        load_spec(path)


def test_malformed_override(write_spec) -> None:
    with pytest.raises(UserInputError, match="expected key.path=value"):
        load_spec(write_spec(), ["budget.num_trials"])
