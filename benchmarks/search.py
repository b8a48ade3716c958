"""search: the default search against random search and Optuna alone at equal epochs: epochs to a
target validation loss and the best validation loss the epochs bought."""

from __future__ import annotations

import json
import math
import statistics
import time
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
# - digits MLP, 7 params 0.18 (scripts/bench.py --only search --search-tasks digits_mlp_wide
#   --search-methods random --search-seed-base 100 --search-seeds 10,
#   docs/bench_search_pilot_targets.json): 9/10; the pilot seeds' best 0.085-0.207; the first
#   trial's best was 2.25-2.31 (chance is ln 10 = 2.30) in 6 of 10 seeds. (A first pilot ran
#   the baseline at the task spec's own 64 epochs and gave 0.37; rerun at 128.)
SEARCH_TASKS = (
    SearchTask("digits_mlp", "digits MLP", "search_spaces/digits_mlp.yaml", 0.12),
    SearchTask("digits_cnn", "digits CNN (Lightning)", "search_spaces/digits_cnn.yaml", 0.10),
    SearchTask("diabetes_mlp", "diabetes MLP (regression)", "search_spaces/diabetes_mlp.yaml", 0.53,
               data="diabetes"),
    SearchTask("digits_mlp_wide", "digits MLP, 7 params", "search_spaces/digits_mlp_wide.yaml", 0.18),
)
SEARCH_TRIALS, SEARCH_MAX_EPOCHS = 16, 8
SEARCH_EPOCHS = SEARCH_TRIALS * SEARCH_MAX_EPOCHS
"""The equal resource every method gets: the baseline's epochs (16 trials x 8)."""
SEARCH_COMMON: dict[str, Any] = {"budget.max_concurrent_trials": 1, "scheduler.max_epochs": SEARCH_MAX_EPOCHS,
                                 "scaling.num_workers": 1}
SEARCH_BASELINE = "random, no early stopping"
SEARCH_DEFAULT = "raysweep default"
OPTUNA_ALONE = "Optuna alone"


def default_search() -> dict[str, Any]:
    """The spec's default sampler and scheduler (the field defaults of SamplerSpec and
    SchedulerSpec), as --set values: what `raysweep tune` searches with when a spec
    names neither. Read from the models, so the entry measures the defaults as they are."""
    from raysweep.config.spec import SamplerSpec, SchedulerSpec

    sampler = {f"sampler.{k}": SamplerSpec.model_fields[k].default
               for k in ("type", "n_startup_trials", "multivariate", "rungs")}
    scheduler = {f"scheduler.{k}": SchedulerSpec.model_fields[k].default
                 for k in ("type", "grace_period", "reduction_factor", "brackets")}
    return {**sampler, **scheduler}


def by_epochs(settings: dict[str, Any]) -> dict[str, Any]:
    """A search run at the equal resource: new configurations until SEARCH_EPOCHS are spent."""
    return {**settings, "budget.total_epochs": SEARCH_EPOCHS, "budget.num_trials": None}


# Each method is a short key (--search-methods), its name in the tables, and its spec values
# (Optuna alone: the values its sampler and pruner are read from). The variants after
# `optuna` are the candidates compared on pilot seeds 100-102 (docs/bench_search_pilot.json).
# sampler.rungs was then on by default; the run on seeds 0-4 (docs/bench_search_choice.json:
# default = rungs on, the method then named `final` = rungs off) found rungs off better at equal epochs on 3 of the 4
# tasks, so the default is now off, and the measured run (seeds 5-9) compares the default
# with `rungs` (the same, rungs on), the baseline and Optuna alone.
def search_methods() -> dict[str, tuple[str, dict[str, Any]]]:
    tpe4 = {"sampler.type": "tpe", "sampler.n_startup_trials": 4, "sampler.multivariate": None}
    asha3 = {"scheduler.type": "asha", "scheduler.grace_period": 1, "scheduler.reduction_factor": 3,
             "scheduler.brackets": None}
    default = default_search()
    return {
        "random": (SEARCH_BASELINE, {"sampler.type": "random", "scheduler.type": "fifo",
                                     "budget.num_trials": SEARCH_TRIALS, "budget.total_epochs": None}),
        "default": (SEARCH_DEFAULT, by_epochs(default)),
        "rungs": (f"{SEARCH_DEFAULT}, sampler.rungs: true", by_epochs({**default, "sampler.rungs": True})),
        "optuna": (OPTUNA_ALONE, default),
        "tpe4_rungs_asha3": ("TPE (4 start-up, rungs) + ASHA (grace 1, factor 3)",
                             by_epochs({**tpe4, **asha3, "sampler.rungs": True})),
        "tpe4_final_asha3": ("TPE (4 start-up, final values) + ASHA (grace 1, factor 3)",
                             by_epochs({**tpe4, **asha3, "sampler.rungs": False})),
        "tpe4_rungs_hb3": ("TPE (4 start-up, rungs) + Hyperband (grace 1, factor 3)",
                           by_epochs({**tpe4, **asha3, "scheduler.type": "hyperband", "sampler.rungs": True})),
        "tpe10_rungs_asha2": ("TPE (10 start-up, rungs) + ASHA (grace 1, factor 2)",
                              by_epochs({**tpe4, **asha3, "sampler.n_startup_trials": 10,
                                         "scheduler.reduction_factor": 2, "sampler.rungs": True})),
    }


SEARCH_MEASURED = "random,default,rungs,optuna"
"""The methods of the measured run (scripts/bench.py --search-methods)."""


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
    """The geometric mean over tasks of the default search's fewer-epochs factor."""
    factors = [x["fewer_epochs_factor"] for x in r["rows"] if x["name"] == SEARCH_DEFAULT]
    return None if not factors or any(f is None for f in factors) else geometric_mean(factors)


def median_best(samples: list[dict[str, Any]]) -> float:
    """The median over seeds of the lowest val_loss within the equal epochs."""
    return statistics.median(s["best_val_loss"] for s in samples)


def comparisons(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each comparison the issue asks for, with its figures per task and `met`
    (None: a method it needs was not run)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {(x["task"], x["name"]): x for x in r["rows"]}
    tasks = list(dict.fromkeys(x["task"] for x in r["rows"]))

    def best_against(other: str, better: Any) -> dict[str, Any]:
        pairs = {t: (rows[t, SEARCH_DEFAULT]["median_best_val_loss"], rows[t, other]["median_best_val_loss"])
                 for t in tasks if (t, SEARCH_DEFAULT) in rows and (t, other) in rows}
        return {"per_task": {t: {"default": a, other: b} for t, (a, b) in pairs.items()},
                "met": None if len(pairs) < len(tasks) or not pairs else all(better(a, b) for a, b in pairs.values())}

    overall = search_overall(r)
    return {
        "epochs to the target, default vs random (>= 3x, geometric mean over tasks)": {
            "per_task": {t: rows[t, SEARCH_DEFAULT]["fewer_epochs_factor"]
                         for t in tasks if (t, SEARCH_DEFAULT) in rows},
            "overall": overall, "met": None if overall is None else overall >= 3},
        f"best val_loss in {SEARCH_EPOCHS} epochs, default vs random (lower on every task)":
            best_against(SEARCH_BASELINE, lambda a, b: a < b),
        f"best val_loss in {SEARCH_EPOCHS} epochs, default vs Optuna alone (as low or lower on every task)":
            best_against(OPTUNA_ALONE, lambda a, b: a <= b),
    }


def search_table(r: dict[str, Any]) -> list[str]:
    def shown(v: float | None, none: str) -> Any:
        return none if v is None else v

    overall = r["overall_fewer_epochs_factor"]
    lines = [*md_table(["task", "target val_loss", "method", "median epochs to target", "reached",
                        "fewer-epochs factor", f"best val_loss in {r['epochs']} epochs (median)",
                        "configs tried (median)"],
                       [[x["task"], x["target_val_loss"], x["name"], shown(x["median_epochs_to_target"], "not reached"),
                         f"{x['reached']}/{x['seeds']}", shown(x["fewer_epochs_factor"], "undecided"),
                         f"{x['median_best_val_loss']:.4f}", x["median_configs"]]
                        for x in r["rows"]]),
             f"Overall fewer-epochs factor of the default (geometric mean of the per-task factors): "
             f"{'undecided' if overall is None else f'{overall:.3g}'}.", ""]
    lines += [f"- {name}: {'met' if c['met'] else 'not decided' if c['met'] is None else 'missed'}"
              for name, c in r["comparisons"].items()]
    lines += ["", f"Every method gets the same {r['epochs']} epochs ({r['trials']} trials x {r['max_epochs']} for the "
              "baseline); the default and its variants sample new configurations until those epochs are spent "
              "(budget.total_epochs), Optuna alone runs study.optimize with the same sampler settings and a "
              "HyperbandPruner until they are spent. Per task: the baseline's median epochs to the target over seeds "
              "/ the method's, epochs counted in the order they ran (one trial at a time) until the first epoch at or "
              "below the target; a seed that never reaches it ranks last. Seeds "
              f"{r['seed_base']}..{r['seed_base'] + r['seeds'] - 1} (sampler and trainer); the default: "
              f"{json.dumps(r['default'])}.", ""]
    return lines


def search_met(r: dict[str, Any]) -> bool | None:
    verdicts = [c["met"] for c in r.get("comparisons", comparisons(r)).values()]
    if any(v is False for v in verdicts):
        return False
    return None if any(v is None for v in verdicts) else True


class _Spent(Exception):
    """The equal epochs are spent (Optuna alone): the study stops after this trial."""


def optuna_alone(bench: Bench, task: SearchTask, seed: int, storage: Path,
                 settings: dict[str, Any]) -> list[list[dict[str, float]]]:
    """The anchor a user would otherwise pick: the trainer run through a TrainContext in
    this process (no Ray) inside a plain `study.optimize` loop, with Optuna's TPE (the
    spec's start-up count, no rungs) and HyperbandPruner (grace period, max epochs and
    reduction factor of `settings`), until SEARCH_EPOCHS epochs are spent. Each trial's
    epoch rows, in the order they ran."""
    import optuna
    import torch

    from raysweep.config.space import DefineByRun
    from raysweep.data.arrays import load_arrays
    from raysweep.data.files import resolve_data
    from raysweep.report import Report
    from raysweep.worker.checkpoint import CheckpointSettings
    from raysweep.worker.context import TrainContext
    from raysweep.worker.entry import resolve_train_fn
    from raysweep.worker.plan import LightningSettings

    spec = search_spec(bench, task, storage, **SEARCH_COMMON, **settings, **{"sampler.seed": seed, "seed": seed})
    train, validation = load_arrays(resolve_data(spec.data, source=task.spec))
    train_fn = resolve_train_fn(spec.trainer, LightningSettings(spec.lightning.precision,
                                                                spec.lightning.gradient_clip_val))
    assert train_fn is not None
    startup = spec.sampler.n_startup_trials
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=spec.sampler.multivariate,
                                         n_startup_trials=10 if startup is None else startup)
    pruner = optuna.pruners.HyperbandPruner(min_resource=spec.scheduler.grace_period,
                                            max_resource=spec.scheduler.max_epochs,
                                            reduction_factor=round(spec.scheduler.reduction_factor))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # (named: HyperbandPruner assigns brackets by a hash of the study name, random when unnamed)
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner,
                                study_name=f"optuna-alone-{task.key}-{seed}")
    trials: list[list[dict[str, float]]] = []
    torch.set_num_threads(int(spec.scaling.cpus_per_worker))  # (as a one-CPU trial's process has)

    def objective(trial: optuna.Trial) -> float:
        DefineByRun(spec.space, spec.space_function)(trial)
        rows: list[dict[str, float]] = []
        trials.append(rows)

        def report(flat: dict[str, Any], _state: Any) -> None:
            metrics = Report.from_ray(flat).metrics
            if "val_loss" not in metrics:
                return
            rows.append(metrics)
            trial.report(metrics["val_loss"], len(rows))
            if sum(map(len, trials)) >= SEARCH_EPOCHS:
                raise _Spent
            if trial.should_prune():
                raise optuna.TrialPruned

        ctx = TrainContext(params={**spec.params, **trial.params}, num_epochs=spec.scheduler.max_epochs,
                           seed=spec.seed, train=train, validation=validation, report_fn=report,
                           checkpoints=CheckpointSettings(every_epochs=10**6))
        try:
            train_fn(ctx)
        except _Spent:
            study.stop()
        return rows[-1]["val_loss"]

    study.optimize(objective, catch=())
    return trials


@ENTRIES.register(
    "search",
    method=(
        "not interleaved pairs: seeds (--search-seeds), medians per task, every method at equal epochs"
    ), target=">= 3x fewer epochs to the target than random search overall (geometric mean of the "
                  "tasks' factors); a lower best val_loss than random on every task and one as low as Optuna "
                  "alone's, all at equal epochs", table=search_table, met=search_met)
def bench_search(bench: Bench) -> dict[str, Any]:
    bench.ray()
    seeds = range(bench.args.search_seed_base, bench.args.search_seed_base + bench.args.search_seeds)
    tasks = [t for t in SEARCH_TASKS if t.key in bench.args.search_tasks.split(",")]
    methods = {k: search_methods()[k] for k in bench.args.search_methods.split(",")}
    storage = Path(scratch_dir(prefix="bench-search-"))
    rows = []
    for task in tasks:
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in methods.values()}
        for seed in seeds:
            for key, (name, settings) in methods.items():
                bench.stage(f"{task.key}: {name}, seed {seed}")
                started = time.monotonic()
                if key == "optuna":
                    trials = optuna_alone(bench, task, seed, storage, settings)
                else:
                    spec = search_spec(bench, task, storage, **SEARCH_COMMON, **settings,
                                       **{"sampler.seed": seed, "seed": seed})
                    trials = epoch_rows(sweep(spec))
                results = [row for rows_ in trials for row in rows_]
                samples[name].append({
                    "seed": seed, "epochs": epochs_to_target(results, task.target_val_loss),
                    "reached": epochs_to_target(results, task.target_val_loss) is not None,
                    "total_epochs": len(results), "configs": len(trials),
                    "best_val_loss": min(r["val_loss"] for r in results[:SEARCH_EPOCHS]),
                    "wall_s": round(time.monotonic() - started, 1),
                    "val_loss_by_trial": [[round(r["val_loss"], 4) for r in t] for t in trials]})
        base = median_epochs(samples[SEARCH_BASELINE]) if SEARCH_BASELINE in samples else math.inf
        for name, v in samples.items():
            ours = median_epochs(v)
            rows.append({"task": task.name, "key": task.key, "spec": task.spec, "target_val_loss": task.target_val_loss,
                         "name": name, "median_epochs_to_target": None if math.isinf(ours) else ours,
                         "reached": sum(s["reached"] for s in v), "seeds": len(v),
                         "fewer_epochs_factor": fewer_epochs_factor(base, ours),
                         "median_best_val_loss": median_best(v),
                         "median_configs": statistics.median(s["configs"] for s in v),
                         "median_total_epochs": statistics.median(s["total_epochs"] for s in v), "per_seed": v})
    r = {"entry": "search", "baseline": SEARCH_BASELINE, "trials": SEARCH_TRIALS, "max_epochs": SEARCH_MAX_EPOCHS,
         "epochs": SEARCH_EPOCHS, "seeds": len(seeds), "seed_base": seeds.start, "common": SEARCH_COMMON,
         "default": default_search(), "methods": {name: settings for name, settings in methods.values()},
         "rows": rows, "overall": "geometric mean over tasks of the default's fewer-epochs factor (baseline median "
                                  "epochs to target / the default's)"}
    r["overall_fewer_epochs_factor"] = search_overall(r)
    r["comparisons"] = comparisons(r)
    return r
