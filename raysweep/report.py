"""The console summary at the end of a sweep: a table of trials and the best one."""

from __future__ import annotations

from typing import Any

from raysweep.spec import Spec


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_rows(spec: Spec, outcome: Any) -> list[list[str]]:
    metric, mode = spec.scheduler.metric, spec.scheduler.mode
    names = list(spec.space)
    rows = []
    for record in outcome.tracker.trials.values():
        best = record.best(metric, mode) or {}
        status = "STOPPED" if record.early_stopped else record.status
        startup = "-" if record.startup_s is None else f"{record.startup_s:.1f}"
        rows.append([
            record.trial_id, status, str(len(record.history)),
            *(_fmt(record.params.get(n)) for n in names),
            _fmt(best.get(metric, "-")), _fmt(best.get("val_accuracy", "-")), startup,
            f"{record.wall_s:.1f}",
        ])
    return rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def print_summary(spec: Spec, outcome: Any, uri: str, parent_id: str) -> None:
    metric, mode = spec.scheduler.metric, spec.scheduler.mode
    header = ["trial", "status", "epochs", *spec.space, f"best {metric}", "val_accuracy", "startup s", "wall s"]
    print()
    print(format_table(header, trial_rows(spec, outcome)))
    best = outcome.tracker.best_trial()
    print()
    if best is None:
        print("no trial finished")
    else:
        metrics = best.best(metric, mode) or {}
        print(f"best trial {best.trial_id}: {_fmt(best.params)}")
        print("  " + " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
    failed = [t for t in outcome.tracker.trials.values() if t.status == "FAILED"]
    for record in failed:
        print(f"failed trial {record.trial_id}: {record.error}")
    print(f"sweep {outcome.sweep_id}: {len(outcome.tracker.trials)} trials in {outcome.wall_s:.0f} s; "
          f"run folder {outcome.sweep_dir}")
    print(f"MLflow: {uri} experiment {spec.name!r}, parent run {parent_id} "
          f"(view: mlflow ui --backend-store-uri {uri})")
