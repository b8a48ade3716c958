"""The search entries (benchmarks/search.py, benchmarks/search_mo.py) without running a sweep: how
epochs to target, factors and hypervolume references are computed, the tasks' specs and
data, the command line. No Ray cluster."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raysweep.config.load import load_spec
from raysweep.config.spec import CategoricalParam, DataSpec, IntParam
from raysweep.data.examples import write_diabetes_parquet
from trainers import diabetes_mlp, digits_mlp

ROOT = Path(__file__).resolve().parents[2]
BASELINE = "random, no early stopping"


@pytest.fixture(scope="module")
def bench(bench_script: Any) -> Iterator[Any]:
    """The search entries' modules and scripts/bench.py (its `main`), as one namespace."""
    import types

    from benchmarks import search, search_mo

    yield types.SimpleNamespace(**{**vars(search), **vars(search_mo), "main": bench_script.main})


def rows(*losses: float) -> list[dict[str, float]]:
    return [{"val_loss": v} for v in losses]


def test_epochs_to_target_counts_epochs_until_the_first_at_or_below(bench: Any) -> None:
    assert bench.epochs_to_target(rows(1.0, 0.5, 0.2, 0.1), 0.2) == 3
    assert bench.epochs_to_target(rows(0.1), 0.2) == 1
    assert bench.epochs_to_target(rows(1.0, 0.5), 0.2) is None


def test_a_seed_that_never_reaches_the_target_ranks_last(bench: Any) -> None:
    seeds = [{"epochs": e} for e in (10, None, 30, None, 20)]
    assert bench.median_epochs(seeds) == 30
    assert math.isinf(bench.median_epochs([{"epochs": e} for e in (10, None, None)]))
    assert bench.fewer_epochs_factor(60, 20) == 3
    assert bench.fewer_epochs_factor(60, math.inf) == 0.0
    assert bench.fewer_epochs_factor(math.inf, 20) is None


DEFAULT = "raysweep default"
OPTUNA = "Optuna alone"


def result(factors: list[float | None], best: tuple[float, float, float] = (0.1, 0.2, 0.1)) -> dict[str, Any]:
    """Per task: the baseline, the default with `factors`, Optuna alone; median best
    val_loss (default, random, Optuna alone) = `best`."""
    rows_: list[dict[str, Any]] = []
    for i, factor in enumerate(factors):
        common = {"task": f"task {i}", "target_val_loss": 0.1, "reached": 5, "seeds": 5, "median_total_epochs": 128,
                  "median_configs": 16}
        rows_.append({**common, "name": BASELINE, "median_epochs_to_target": 60, "fewer_epochs_factor": 1.0,
                      "median_best_val_loss": best[1]})
        rows_.append({**common, "name": DEFAULT, "median_epochs_to_target": None if factor == 0 else 20,
                      "fewer_epochs_factor": factor, "median_best_val_loss": best[0]})
        rows_.append({**common, "name": OPTUNA, "median_epochs_to_target": 30, "fewer_epochs_factor": 2.0,
                      "median_best_val_loss": best[2]})
    r = {"rows": rows_, "trials": 16, "max_epochs": 8, "epochs": 128, "seeds": 5, "seed_base": 0,
         "default": {"scheduler.type": "asha"}}
    r["overall_fewer_epochs_factor"] = bench_module().search_overall(r)
    r["comparisons"] = bench_module().comparisons(r)
    return r


def bench_module() -> Any:
    from benchmarks import search

    return search


def test_overall_factor_is_the_geometric_mean_of_the_task_factors(bench: Any) -> None:
    assert bench.SEARCH_BASELINE == BASELINE and bench.SEARCH_DEFAULT == DEFAULT and bench.OPTUNA_ALONE == OPTUNA
    r = result([2.0, 4.5, 3.0])
    assert bench.search_overall(r) == pytest.approx(3.0)
    assert bench.search_met(r) is True
    assert bench.search_met(result([2.0, 4.0, 3.0])) is False
    assert bench.search_overall(result([2.0, 0.0, 9.0])) == 0.0
    undecided = result([2.0, None, 3.0])
    assert bench.search_overall(undecided) is None and bench.search_met(undecided) is None
    table = "\n".join(bench.search_table(undecided))
    assert "not reached" not in table and "undecided" in table and "geometric mean" in table
    assert "not reached" in "\n".join(bench.search_table(result([2.0, 0.0, 3.0])))


def test_each_comparison_at_equal_epochs_decides_met(bench: Any) -> None:
    names = list(result([3.0]).get("comparisons"))
    assert len(names) == 3
    # (the default's best val_loss: lower than random's, as low as Optuna alone's)
    assert [c["met"] for c in result([3.0], best=(0.1, 0.2, 0.1))["comparisons"].values()] == [True, True, True]
    missed = result([3.0, 3.0], best=(0.2, 0.2, 0.1))
    assert [c["met"] for c in missed["comparisons"].values()] == [True, False, False]
    assert bench.search_met(missed) is False
    table = "\n".join(bench.search_table(missed))
    assert f"{names[1]}: missed" in table and f"{names[0]}: met" in table
    no_optuna = result([3.0])
    no_optuna["rows"] = [x for x in no_optuna["rows"] if x["name"] != OPTUNA]
    assert [c["met"] for c in bench.comparisons(no_optuna).values()] == [True, True, None]


def test_the_default_method_is_the_specs_defaults(bench: Any) -> None:
    from raysweep.config.spec import SamplerSpec, SchedulerSpec

    default = bench.default_search()
    assert default["sampler.type"] == SamplerSpec().type and default["sampler.rungs"] == SamplerSpec().rungs
    assert default["scheduler.reduction_factor"] == SchedulerSpec.model_fields["reduction_factor"].default
    name, settings = bench.search_methods()["default"]
    assert name == DEFAULT and settings["budget.total_epochs"] == bench.SEARCH_EPOCHS == 128
    assert settings["budget.num_trials"] is None
    assert bench.search_methods()["random"][1]["budget.num_trials"] * 8 == bench.SEARCH_EPOCHS


def test_every_task_has_a_fixed_target_and_a_runnable_spec(bench: Any, tmp_path: Path) -> None:
    keys = [t.key for t in bench.SEARCH_TASKS]
    assert keys == ["digits_mlp", "digits_cnn", "diabetes_mlp", "digits_mlp_wide"] and len(set(keys)) == len(keys)
    for task in bench.SEARCH_TASKS:
        assert 0 < task.target_val_loss < 1
        for key, (_, settings) in bench.search_methods().items():
            spec = load_spec(task.spec, [f"data.train={tmp_path}/train", f"data.validation={tmp_path}/validation",
                                         *[f"{k}={'null' if v is None else v}"
                                           for k, v in {**bench.SEARCH_COMMON, **settings}.items()]])
            assert spec.budget.max_concurrent_trials == 1 and spec.scaling.num_workers == 1
            # (every method gets the same epochs, whatever budget the task's own spec sets;
            # Optuna alone counts them itself)
            epochs = spec.budget.total_epochs or spec.budget.num_trials * spec.scheduler.max_epochs
            assert key == "optuna" or epochs == bench.SEARCH_EPOCHS, (task.key, settings)
            assert spec.scheduler.metric == "val_loss" and spec.scheduler.mode == "min"


def test_mo_reference_is_the_largest_model_the_space_allows(bench: Any) -> None:
    spec = load_spec(bench.MO_SPEC, [])
    largest = bench.largest_params_count(spec)
    hidden, layers = spec.space["hidden"], spec.space["num_layers"]
    assert isinstance(hidden, IntParam) and isinstance(layers, CategoricalParam)
    sizes = [sum(p.numel() for p in digits_mlp.build_model({"hidden": h, "num_layers": n}).parameters())
             for h in range(hidden.low, hidden.high + 1) for n in layers.choices]
    assert largest == max(sizes) == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert bench.MO_CHANCE_VAL_LOSS > math.log(10)


def test_mo_met_needs_both_medians_and_the_equal_epochs_arm(bench: Any) -> None:
    def r(hv: float, epochs: float, equal: float | None = 1.0) -> dict[str, Any]:
        return {"rows": [{"name": bench.MO_BASELINE, "median_hypervolume_ratio": 1.0, "median_epochs_ratio": 1.0},
                         {"name": "MultiObjectiveASHA", "median_hypervolume_ratio": hv, "median_epochs_ratio": epochs},
                         {"name": "MultiObjectiveASHA, equal epochs", "median_hypervolume_ratio": equal,
                          "median_epochs_ratio": 1.0}]}

    assert bench.mo_met(r(0.95, 0.5)) is True
    assert bench.mo_met(r(0.94, 0.4)) is False
    assert bench.mo_met(r(1.0, 0.51)) is False
    assert bench.mo_met(r(0.95, 0.5, equal=0.99)) is False
    assert bench.mo_met(r(0.95, 0.5, equal=None)) is None
    assert bench.mo_met({"rows": [{"name": "MultiObjectiveASHA", "median_hypervolume_ratio": None,
                                   "median_epochs_ratio": 0.4}]}) is None
    assert list(bench.mo_comparisons(r(0.9, 0.5, equal=1.2)).values()) == [False, True]


def test_unknown_search_task_is_a_usage_error(bench: Any, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["bench.py", "--only", "search", "--search-tasks", "digits_mlp,nope"])
    with pytest.raises(SystemExit) as done:
        bench.main()
    assert done.value.code == 2 and "--search-tasks" in capsys.readouterr().err


def test_diabetes_data_is_standardized_on_the_training_split(tmp_path: Path) -> None:
    assert write_diabetes_parquet(tmp_path) == (353, 89)
    train = pq.read_table(tmp_path / "train" / "part-0.parquet")
    validation = pq.read_table(tmp_path / "validation" / "part-0.parquet")
    assert train.column_names == [*(f"f_{i}" for i in range(10)), "target"]
    assert all(str(t) == "float" for t in train.schema.types)
    values = train.to_pandas().to_numpy()
    np.testing.assert_allclose(values.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(values.std(axis=0), 1, atol=1e-4)
    again = tmp_path / "again"
    write_diabetes_parquet(again)
    assert pq.read_table(again / "validation" / "part-0.parquet").equals(validation)


def test_diabetes_model_predicts_one_value_per_row() -> None:
    model = diabetes_mlp.build_model({"hidden": 8, "num_layers": 2})
    assert model(torch.zeros(5, diabetes_mlp.NUM_FEATURES)).shape == (5, 1)


def test_the_diabetes_trainer_beats_predicting_the_mean(tmp_path: Path) -> None:
    """trainers/diabetes_mlp.py on the written Parquet, in process: the validation MSE
    (target standardized: 1.0 is about the mean's) falls below 0.8 in 8 epochs."""
    from raysweep.data.arrays import load_arrays
    from raysweep.data.files import resolve_data
    from raysweep.worker.context import TrainContext

    write_diabetes_parquet(tmp_path)
    spec = DataSpec(train=str(tmp_path / "train"), validation=str(tmp_path / "validation"), features=["f_*"],
                    label="target")
    train, validation = load_arrays(resolve_data(spec, "diabetes"))
    ctx, reports = TrainContext.in_process(train, validation, params={"lr": 0.01, "hidden": 64, "batch_size": 32},
                                           num_epochs=8)
    diabetes_mlp.train(ctx)
    assert len(reports) == 8 and reports[-1][0]["val_loss"] < 0.8, [m["val_loss"] for m, _ in reports]
