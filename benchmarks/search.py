"""search: epochs to a target validation loss, TPE + ASHA against random search without early stopping."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Bench, scratch_dir, sweep, trials_in_order
from benchmarks.core import md_table
from benchmarks.entries import ENTRIES


@dataclass(frozen=True)
class SearchTask:
    """One task of the search entries: a runnable spec, where its data comes from, and its
    target validation loss (fixed before any measured run, see SEARCH_TASKS)."""

    key: str
    """What --search-tasks names it by."""
    name: str
    spec: str
    target_val_loss: float
    values: tuple[tuple[str, Any], ...] = ()
    """Overrides of the spec besides data, storage, budget, scheduler and seeds."""
    data: str = "digits"
    """digits: the digits sets the script wrote under bench.tmp; diabetes: write_diabetes_parquet."""


# The targets were fixed before the measured runs, from pilot sweeps of the baseline (random
# search, no early stopping, 16 trials x 8 epochs) on seeds 100-109, never the seeds measured
# here (0..N-1): each is the lowest val_loss on a 0.01 grid that the baseline reached in at
# least 9 of the 10 pilot seeds. Pilot figures (reached, median epochs to it, seeds reaching it
# in their first trial; the pilot seeds' best val_loss):
# - digits MLP 0.12: 9/10, 67 epochs, 0/10 in the first trial; best 0.078-0.120.
# - digits CNN 0.10: 9/10, 42 epochs, 2/10 in the first trial (many configs of its space are
#   good); best 0.039-0.140.
# - diabetes MLP 0.53: 10/10, 43 epochs, 0/10 in the first trial; best 0.482-0.525 (predicting
#   the training mean scores 0.84 on this split, least squares 0.56).
SEARCH_TASKS = (
    SearchTask("digits_mlp", "digits MLP", "search_spaces/digits_mlp.yaml", 0.12),
    SearchTask("digits_cnn", "digits CNN (Lightning)", "search_spaces/digits_cnn.yaml", 0.10),
    SearchTask("diabetes_mlp", "diabetes MLP (regression)", "search_spaces/diabetes_mlp.yaml", 0.53,
               data="diabetes"),
)
SEARCH_TRIALS, SEARCH_MAX_EPOCHS = 16, 8
SEARCH_COMMON: dict[str, Any] = {"budget.num_trials": SEARCH_TRIALS, "budget.max_concurrent_trials": 1,
                 "scheduler.max_epochs": SEARCH_MAX_EPOCHS, "scaling.num_workers": 1}
SEARCH_BASELINE = "random, no early stopping"
SEARCH_METHODS: dict[str, dict[str, Any]] = {
    SEARCH_BASELINE: {"sampler.type": "random", "scheduler.type": "fifo"},
    # The same settings on every task and seed. Chosen on the pilot seeds 100-104 (against the
    # baseline's pilot sweeps, the targets above) among: these (geometric mean of the per-task
    # factors 1.30); reduction_factor 8 (1.17); n_startup_trials 2, multivariate TPE,
    # reduction_factor 4 (1.00); the same with n_startup_trials 4 (0: diabetes missed its
    # target in most seeds); n_startup_trials 8, reduction_factor 4 (0, likewise).
    "TPE + ASHA": {"sampler.type": "tpe", "sampler.n_startup_trials": 4, "scheduler.type": "asha",
                   "scheduler.grace_period": 1, "scheduler.reduction_factor": 3},
}


def search_data(bench: Bench, task: SearchTask) -> Path:
    """The folder with the task's train/ and validation/ splits (written once per run)."""
    from raysweep.data.examples import write_diabetes_parquet

    if task.data == "digits":
        return bench.tmp
    root = bench.tmp / task.data
    if not (root / "validation").exists():
        write_diabetes_parquet(root)
    return root


def search_spec(bench: Bench, task: SearchTask, storage: Path, **values: Any) -> Any:
    """The task's spec on its data, with `values` (and the task's own values) set."""
    from raysweep.config.load import load_spec

    root = search_data(bench, task)
    overrides = [f"data.train={root}/train", f"data.validation={root}/validation", f"storage_path={storage}"]
    overrides += [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                  for k, v in {**dict(task.values), **values}.items()]
    return load_spec(task.spec, overrides)


def epoch_rows(result: Any) -> list[list[dict[str, float]]]:
    """Each trial's epoch rows (those with val_loss), trials in the order they ran (one at a time)."""
    return [[row for row in trial.history if "val_loss" in row] for trial in trials_in_order(result)]


def epochs_to_target(results: list[dict[str, float]], target: float) -> int | None:
    """Epochs consumed (every result is one epoch) until val_loss <= target; None: never."""
    for i, result in enumerate(results):
        if result["val_loss"] <= target:
            return i + 1
    return None


def median_epochs(samples: list[dict[str, Any]]) -> float:
    """The median epochs to target over seeds, a seed that never reached it ranked last (inf)."""
    return statistics.median(math.inf if s["epochs"] is None else s["epochs"] for s in samples)


def fewer_epochs_factor(base: float, ours: float) -> float | None:
    """base / ours; 0.0 when ours never reached the target (median inf); None when the
    baseline's median never did (the target was out of its reach: undecided)."""
    if math.isinf(base):
        return None
    return 0.0 if math.isinf(ours) else base / ours


def geometric_mean(values: list[float]) -> float:
    return 0.0 if any(v == 0 for v in values) else math.exp(statistics.fmean(math.log(v) for v in values))


def search_overall(r: dict[str, Any]) -> float | None:
    """The geometric mean over tasks of TPE + ASHA's per-task fewer-epochs factor."""
    factors = [x["fewer_epochs_factor"] for x in r["rows"] if x["name"] != SEARCH_BASELINE]
    return None if not factors or any(f is None for f in factors) else geometric_mean(factors)


def search_table(r: dict[str, Any]) -> list[str]:
    def shown(v: float | None, none: str) -> Any:
        return none if v is None else v

    overall = r["overall_fewer_epochs_factor"]
    return [*md_table(["task", "target val_loss", "method", "median epochs to target", "reached",
                       "fewer-epochs factor", "epochs trained (median)"],
                      [[x["task"], x["target_val_loss"], x["name"], shown(x["median_epochs_to_target"], "not reached"),
                        f"{x['reached']}/{x['seeds']}", shown(x["fewer_epochs_factor"], "undecided"),
                        x["median_total_epochs"]]
                       for x in r["rows"]]),
            f"Overall fewer-epochs factor (geometric mean of the per-task factors): "
            f"{'undecided' if overall is None else f'{overall:.3g}'}. Per task: the baseline's median epochs to "
            f"the target over seeds / the method's; {r['trials']} trials of up to {r['max_epochs']} epochs per sweep, "
            "one at a time, epochs counted in the order they ran until the first epoch at or below the target; a "
            "seed that never reaches it ranks last (its epochs count as infinite). Seeds 0.."
            f"{r['seeds'] - 1} (sampler and trainer); TPE + ASHA: {json.dumps(r['methods']['TPE + ASHA'])}.", ""]


def search_met(r: dict[str, Any]) -> bool | None:
    overall = search_overall(r)
    return None if overall is None else overall >= 3


@ENTRIES.register(
    "search",
    method=(
        "not interleaved pairs: seeds (--search-seeds), median epochs to the target per task"
    ), target=">= 3x fewer epochs to the target than random search overall (geometric mean "
                  "of the digits MLP, digits CNN and diabetes MLP factors)", table=search_table, met=search_met)
def bench_search(bench: Bench) -> dict[str, Any]:
    bench.ray()
    seeds = bench.args.search_seeds
    tasks = [t for t in SEARCH_TASKS if t.key in bench.args.search_tasks.split(",")]
    storage = Path(scratch_dir(prefix="bench-search-"))
    rows = []
    for task in tasks:
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in SEARCH_METHODS}
        for seed in range(seeds):
            for name, settings in SEARCH_METHODS.items():
                bench.stage(f"{task.key}: {name}, seed {seed}")
                spec = search_spec(bench, task, storage, **SEARCH_COMMON, **settings,
                                   **{"sampler.seed": seed, "seed": seed})
                result = sweep(spec)
                trials = epoch_rows(result)
                results = [row for rows_ in trials for row in rows_]
                samples[name].append({
                    "seed": seed, "epochs": epochs_to_target(results, task.target_val_loss),
                    "reached": epochs_to_target(results, task.target_val_loss) is not None,
                    "total_epochs": len(results), "best_val_loss": min(r["val_loss"] for r in results),
                    "sweep_wall_s": round(result.wall_s, 1),
                    "val_loss_by_trial": [[round(r["val_loss"], 4) for r in t] for t in trials]})
        base = median_epochs(samples[SEARCH_BASELINE])
        for name, v in samples.items():
            ours = median_epochs(v)
            rows.append({"task": task.name, "key": task.key, "spec": task.spec, "target_val_loss": task.target_val_loss,
                         "name": name, "median_epochs_to_target": None if math.isinf(ours) else ours,
                         "reached": sum(s["reached"] for s in v), "seeds": len(v),
                         "fewer_epochs_factor": fewer_epochs_factor(base, ours),
                         "median_total_epochs": statistics.median(s["total_epochs"] for s in v), "per_seed": v})
    r = {"entry": "search", "baseline": SEARCH_BASELINE, "trials": SEARCH_TRIALS, "max_epochs": SEARCH_MAX_EPOCHS,
         "seeds": seeds, "common": SEARCH_COMMON, "methods": SEARCH_METHODS, "rows": rows,
         "overall": "geometric mean over tasks of the per-task fewer-epochs factor (baseline median epochs to "
                    "target / TPE + ASHA's)"}
    r["overall_fewer_epochs_factor"] = search_overall(r)
    return r


