"""search_mo: MultiObjectiveASHA against the same two-objective sweep without early stopping."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import Bench, scratch_dir, sweep, trials_in_order
from benchmarks.core import md_table
from benchmarks.entries import ENTRIES
from trainers import digits_mlp

MO_SPEC = "search_spaces/digits_mlp_pareto.yaml"
MO_BASELINE, MO_ASHA = "no early stopping (FIFO)", "MultiObjectiveASHA"
MO_EQUAL = "MultiObjectiveASHA, equal epochs"
"""New configurations until the baseline's epochs (num_trials x max_epochs) are spent (budget.total_epochs)."""
MO_METHODS: dict[str, dict[str, Any]] = {MO_BASELINE: {"scheduler.type": "fifo"},
                                         MO_ASHA: {"scheduler.type": "asha"},  # the spec's grace period and factor
                                         MO_EQUAL: {"scheduler.type": "asha", "budget.num_trials": "null"}}
MO_CHANCE_VAL_LOSS = 2.31
"""The hypervolume's reference val_loss: just above ln 10 = 2.303, the cross-entropy of a
uniform guess over the 10 digits (chance level)."""


def largest_params_count(spec: Any) -> float:
    """The params_count of the largest model the spec's space allows: digits_mlp's size grows
    with hidden and num_layers, so the largest is the space's highest hidden at its most layers
    (the reference's params_count: a trial of exactly that size adds no volume)."""
    space = spec.space
    hidden = space["hidden"].high if "hidden" in space else spec.params["hidden"]
    layers = max(space["num_layers"].choices) if "num_layers" in space else spec.params.get("num_layers", 1)
    model = digits_mlp.build_model({"hidden": hidden, "num_layers": layers})
    return float(sum(p.numel() for p in model.parameters()))


def mo_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["method", "hypervolume, fraction of the reference box (median)", "front size (median)",
                       "epochs trained (median)", "hypervolume ratio (median)", "epochs ratio (median)"],
                      [[x["name"], x["median_hypervolume_fraction"], x["median_front_size"], x["median_total_epochs"],
                        x["median_hypervolume_ratio"], x["median_epochs_ratio"]] for x in r["rows"]]),
            f"{r['spec']}: objectives {', '.join(f'{m} ({mode})' for m, mode in r['objectives'])}, constraints "
            f"{', '.join(r['constraints'])}; {r['trials']} trials of up to {r['max_epochs']} epochs, one at a time, "
            f"sampler {json.dumps(r['sampler'])} (seeds 0..{r['seeds'] - 1}, the same in both arms); ASHA grace "
            f"period {r['grace_period']}, reduction factor {r['reduction_factor']:g}. Hypervolume of the final Pareto "
            f"front (feasible trials that ended well, last epoch) against the reference {r['reference']} "
            f"({r['reference_note']}); ratios per seed (early stopping / none), then the median over seeds. "
            f"{MO_EQUAL}: new configurations until the baseline's {r['trials'] * r['max_epochs']} epochs are "
            "spent.", "",
            *[f"- {name}: {'not decided' if v is None else 'met' if v else 'missed'}"
              for name, v in mo_comparisons(r).items()], ""]


def mo_comparisons(r: dict[str, Any]) -> dict[str, bool | None]:
    """Each comparison's verdict; None when a baseline sweep's front had no volume (no
    ratio) or the arm was not run."""
    rows = {x["name"]: x for x in r["rows"]}
    fewer, equal = rows.get(MO_ASHA), rows.get(MO_EQUAL)
    return {
        "hypervolume >= 0.95x at <= 0.5x the epochs":
            None if fewer is None or fewer["median_hypervolume_ratio"] is None
            else fewer["median_hypervolume_ratio"] >= 0.95 and fewer["median_epochs_ratio"] <= 0.5,
        "hypervolume at equal epochs >= the baseline's":
            None if equal is None or equal["median_hypervolume_ratio"] is None
            else equal["median_hypervolume_ratio"] >= 1.0,
    }


def mo_met(r: dict[str, Any]) -> bool | None:
    verdicts = list(mo_comparisons(r).values())
    if any(v is False for v in verdicts):
        return False
    return None if any(v is None for v in verdicts) else True


@ENTRIES.register(
    "search_mo",
    method=(
        "not interleaved pairs: seeds (--search-seeds), median hypervolume and epochs ratios"
    ), target="MultiObjectiveASHA: hypervolume >= 0.95x at <= 0.5x the epochs of the same "
                  "sweep without early stopping, and >= 1x at equal epochs (medians over seeds)", table=mo_table,
    met=mo_met)
def bench_search_mo(bench: Bench) -> dict[str, Any]:
    from raysweep.config.load import load_spec
    from raysweep.tracking.pareto import hypervolume, minimized

    bench.ray()
    seeds = bench.args.search_seeds
    storage = Path(scratch_dir(prefix="bench-search-mo-"))
    root = bench.tmp
    base_spec = load_spec(MO_SPEC, [f"data.train={root}/train", f"data.validation={root}/validation",
                                    f"storage_path={storage}", "budget.max_concurrent_trials=1"])
    metrics, modes = base_spec.scheduler.metrics, base_spec.scheduler.modes
    if metrics != ["val_loss", "params_count"] or modes != ["min", "min"]:
        raise RuntimeError(f"{MO_SPEC}: expected objectives val_loss, params_count (both min), got {metrics} {modes}")
    reference = [MO_CHANCE_VAL_LOSS, largest_params_count(base_spec)]
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in MO_METHODS}
    used: dict[str, Any] = {}  # each arm's scheduler section, as run
    epochs = base_spec.budget.num_trials * base_spec.scheduler.max_epochs  # (the baseline's: MO_EQUAL's budget)
    for seed in range(seeds):
        for name, settings in MO_METHODS.items():
            bench.stage(f"{name}, seed {seed}")
            spec = load_spec(MO_SPEC, [f"data.train={root}/train", f"data.validation={root}/validation",
                                       f"storage_path={storage}", "budget.max_concurrent_trials=1",
                                       f"sampler.seed={seed}", f"seed={seed}",
                                       *[f"{k}={v}" for k, v in settings.items()],
                                       *([f"budget.total_epochs={epochs}"] if name == MO_EQUAL else [])])
            used[name] = spec.scheduler
            result = sweep(spec)
            front = result.state.front()
            points = [minimized(t.final(metrics), metrics, modes) for t in front]
            trials = trials_in_order(result)
            volume = hypervolume(points, reference)
            samples[name].append({
                "seed": seed, "hypervolume": volume, "hypervolume_fraction": volume / math.prod(reference),
                "total_epochs": sum(len([r for r in t.history if "val_loss" in r]) for t in trials),
                "front": [{"params": t.params, "val_loss": p[0], "params_count": p[1], "epochs": t.epochs}
                          for t, p in zip(front, points, strict=True)],
                "feasible_trials": sum(bool(result.state.feasible(t)) for t in trials if t.state.ended_well),
                "trial_epochs": [t.epochs for t in trials], "sweep_wall_s": round(result.wall_s, 1)})
    base = {s["seed"]: s for s in samples[MO_BASELINE]}
    rows = []
    for name, v in samples.items():
        for s in v:
            b = base[s["seed"]]
            s["hypervolume_ratio"] = s["hypervolume"] / b["hypervolume"] if b["hypervolume"] else None
            s["epochs_ratio"] = s["total_epochs"] / b["total_epochs"]
        ratios = [s["hypervolume_ratio"] for s in v]
        rows.append({"name": name, "median_hypervolume": statistics.median(s["hypervolume"] for s in v),
                     "median_hypervolume_fraction": statistics.median(s["hypervolume_fraction"] for s in v),
                     "median_front_size": statistics.median(len(s["front"]) for s in v),
                     "median_total_epochs": statistics.median(s["total_epochs"] for s in v),
                     "median_hypervolume_ratio": None if None in ratios else statistics.median(ratios),
                     "median_epochs_ratio": statistics.median(s["epochs_ratio"] for s in v), "per_seed": v})
    return {"entry": "search_mo", "baseline": MO_BASELINE, "spec": MO_SPEC, "seeds": seeds,
            "objectives": [[m, mode] for m, mode in zip(metrics, modes, strict=True)],
            "constraints": list(base_spec.constraints), "reference": reference,
            "reference_note": f"val_loss {MO_CHANCE_VAL_LOSS} (chance: ln 10 = 2.303); params_count of the largest "
                              "model the space allows (highest hidden, most layers)",
            "trials": base_spec.budget.num_trials, "max_epochs": base_spec.scheduler.max_epochs,
            "schedulers": {name: scheduler.model_dump() for name, scheduler in used.items()},
            "grace_period": used[MO_ASHA].grace_period, "reduction_factor": used[MO_ASHA].reduction_factor,
            "sampler": {"type": base_spec.sampler.type,
                        **base_spec.sampler.model_dump(exclude_defaults=True, exclude={"seed"})}, "rows": rows}


