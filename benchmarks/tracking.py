"""tracking: a trial's training time with raysweep's MLflow logging against logging off."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import PARAMS, Bench, digits_spec, scratch_dir, sweep, training_seconds, write_sets
from benchmarks.core import interleave, md_table, on_median, spread, spread_text
from benchmarks.entries import ENTRIES

LOGGED = "raysweep MLflow logging"


def tracking_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["trial", "training s (median)", "cost %: median (min-max; IQR; pairs)"],
                      [[x["name"], x["training_s"], spread_text(x["cost_pct"]) if isinstance(x["cost_pct"], dict)
                        else x["cost_pct"]] for x in r["rows"]]),
            f"A {r['epochs']}-epoch one-worker trial, {r['pairs']} interleaved pairs (one sweep each, the order "
            "flipping every pair); cost = the logged trial's training time / the unlogged one's in the same pair, "
            "- 1; the target is decided on the median.", ""]


@ENTRIES.register("tracking", target="MLflow logging <= 2% of training time (median of >= 5 interleaved pairs)",
                  table=tracking_table,
                  met=lambda r: on_median(next(x["cost_pct"] for x in r["rows"] if x["name"] == LOGGED),
                                          lambda m: m <= 2))
def bench_tracking(bench: Bench) -> dict[str, Any]:
    from raysweep.tracking.store import RunStore

    bench.ray()
    train, validation, pairs = bench.train, bench.validation, bench.args.pairs
    tmp = Path(scratch_dir(prefix="bench-tracking-"))
    root = write_sets(tmp / "data", train, validation, tile=8)
    spec = digits_spec(root, tmp / "results", **{
        "scaling.num_workers": 1, "scheduler.type": "fifo", "scheduler.max_epochs": 10, "budget.num_trials": 1,
        **{f"params.{k}": v for k, v in PARAMS.items()}}, searched=("lr",))
    store = RunStore(f"sqlite:///{tmp / 'mlflow.db'}", "bench-tracking")

    def trial(chosen: Any) -> Any:
        def run(i: int) -> float:
            (one,) = sweep(spec, store=chosen).state.trials.values()
            return training_seconds(one)
        return run

    seconds = interleave(pairs, {"no tracking": trial(None), LOGGED: trial(store)})
    base = seconds["no tracking"]
    rows = [{"name": name, "training_s": statistics.median(v),
             "cost_pct": spread([100 * (x / b - 1) for x, b in zip(v, base, strict=True)]),
             "samples": [round(x, 3) for x in v]} for name, v in seconds.items()]
    return {"entry": "tracking", "baseline": "no tracking", "epochs": 10, "rows": rows, "pairs": pairs}
