"""tracking: a trial's training time with raysweep's MLflow logging against logging off."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import PARAMS, Bench, digits_spec, scratch_dir, sweep, training_seconds, write_sets
from benchmarks.core import md_table
from benchmarks.entries import ENTRIES


def tracking_table(r: dict[str, Any]) -> list[str]:
    return md_table(["trial", "training s", "cost %"], [[x["name"], x["training_s"], x["cost_pct"]] for x in r["rows"]])


@ENTRIES.register("tracking", target="MLflow logging <= 2% of training time", table=tracking_table,
                  met=lambda r: next(x["cost_pct"] for x in r["rows"] if x["name"] == "raysweep MLflow logging") <= 2)
def bench_tracking(bench: Bench) -> dict[str, Any]:
    from raysweep.tracking.store import RunStore

    bench.ray()
    train, validation, repeats = bench.train, bench.validation, max(bench.args.repeats, 3)
    tmp = Path(scratch_dir(prefix="bench-tracking-"))
    root = write_sets(tmp / "data", train, validation, tile=8)
    spec = digits_spec(root, tmp / "results", **{
        "scaling.num_workers": 1, "scheduler.type": "fifo", "scheduler.max_epochs": 10, "budget.num_trials": 1,
        **{f"params.{k}": v for k, v in PARAMS.items()}}, searched=("lr",))
    store = RunStore(f"sqlite:///{tmp / 'mlflow.db'}", "bench-tracking")
    seconds: dict[str, list[float]] = {"no tracking": [], "raysweep MLflow logging": []}
    for _ in range(repeats):
        for name, chosen in (("no tracking", None), ("raysweep MLflow logging", store)):
            bench.stage(name)
            (trial,) = sweep(spec, store=chosen).state.trials.values()
            seconds[name].append(training_seconds(trial))
    base = statistics.median(seconds["no tracking"])
    rows = [{"name": name, "training_s": statistics.median(v), "cost_pct": 100 * (statistics.median(v) / base - 1),
             "samples": [round(x, 3) for x in v]} for name, v in seconds.items()]
    return {"entry": "tracking", "baseline": "no tracking", "epochs": 10, "rows": rows}


