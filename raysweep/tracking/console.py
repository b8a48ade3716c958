"""What a sweep prints: one line per trial event, and a table of trials at the end. On
a terminal, a live progress line stays under the event lines (trials done, running and
to come, the best so far, time elapsed, the budget used), redrawn at most once a second;
piped or redirected output gets the plain lines only."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from raysweep.tracking import tags as tag
from raysweep.tracking.trials import SweepResult, SweepState, TrialRecord, TrialState


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return str(value)


CLEAR_LINE = "\r\x1b[2K"
"""Back to the line's start and erase it (a terminal's live line)."""
LIVE_EVERY_S = 1.0


class ConsolePrinter:
    """One line per trial event, ending with the running best; on a terminal, with a
    live progress line (`status()`) under them."""

    def __init__(self, metric: str, echo: bool = True, stream: TextIO | None = None,
                 status: Callable[[], str] | None = None) -> None:
        self.metric, self.echo, self.stream = metric, echo, stream
        self.status = status
        self._shown: str | None = None  # (the live line on screen now)
        self._drawn_at = 0.0

    @property
    def out(self) -> TextIO:
        return self.stream or sys.stdout

    @property
    def live(self) -> bool:
        """A live line: printing, to a terminal, with something to show."""
        return self.echo and self.status is not None and bool(getattr(self.out, "isatty", lambda: False)())

    def _say(self, text: str) -> None:
        if not self.echo:
            return
        if self._shown is not None:
            self.out.write(CLEAR_LINE)
            self._shown = None
        print(text, file=self.out, flush=True)
        self.tick(force=True)

    def tick(self, force: bool = False) -> None:
        """Redraw the live line (at most once a second unless `force`)."""
        if not self.live or (not force and time.monotonic() - self._drawn_at < LIVE_EVERY_S):
            return
        assert self.status is not None
        line = self.status()
        self.out.write(CLEAR_LINE + line)
        self.out.flush()
        self._shown, self._drawn_at = line, time.monotonic()

    def close(self) -> None:
        """Take the live line away (the summary follows on clean lines)."""
        if self._shown is not None:
            self.out.write(CLEAR_LINE)
            self.out.flush()
            self._shown = None

    def started(self, trial_id: str, config: dict[str, Any]) -> None:
        self._say(f"[{trial_id}] started {fmt(config)}")

    def result(self, record: TrialRecord, values: dict[str, float], is_best: bool,
               best_so_far: tuple[str, float] | None) -> None:
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items() if k not in ("epoch", "epochs_completed"))
        best = ""
        if is_best:
            best = f" | new best {self.metric}={values[self.metric]:.4g}"
        elif best_so_far is not None and self.metric in values:
            best = f" | best {self.metric}={best_so_far[1]:.4g} ({best_so_far[0]})"
        self._say(f"[{record.trial_id}] epoch {int(values.get('epoch', 0))} {shown}{best}")

    def preempted(self, trial_id: str, where: str) -> None:
        self._say(f"[{trial_id}] {where}")

    def retried(self, trial_id: str, failures: int, error: str) -> None:
        self._say(f"[{trial_id}] failed ({error}); retrying from its latest checkpoint (failure {failures})")

    def moved(self, trial_id: str, cause: str) -> None:
        self._say(f"[{trial_id}] its node was taken away ({cause}); running again on another node "
                  "from its latest checkpoint (a preemption, not counted in failure.max_failures)")

    def ended(self, record: TrialRecord) -> None:
        if record.state is TrialState.FAILED:
            self._say(f"[{record.trial_id}] FAILED: {record.error}")
        else:
            self._say(f"[{record.trial_id}] {record.state.word} after {record.epochs} epoch(s)")


def live_status(state: SweepState, started: float, num_trials: int | None = None,
                total_epochs: int | None = None, now: float | None = None) -> str:
    """The live line: trials done (how they ended), running and still to start, the best
    so far, time elapsed, and the budget used (trials and epochs, where the spec caps them)."""
    counts = {s: len(state.in_state(s)) for s in TrialState}
    done = sum(counts[s] for s in TrialState if s is not TrialState.RUNNING)
    ended = ", ".join(f"{counts[s]} {s.word}" for s in TrialState if s is not TrialState.RUNNING and counts[s])
    parts = [f"trials: {done} done" + (f" ({ended})" if ended else "") + f", {counts[TrialState.RUNNING]} running"
             + (f", {max(0, num_trials - len(state.trials))} to start" if num_trials is not None else "")]
    if state.best_so_far is not None:
        parts.append(f"best {state.metric} {state.best_so_far[1]:.4g} ({state.best_so_far[0]})")
    elapsed = int((now or time.time()) - started)
    parts.append(f"{elapsed // 3600}:{elapsed % 3600 // 60:02d}:{elapsed % 60:02d}")
    used = ([f"{len(state.trials)}/{num_trials} trials"] if num_trials is not None else []) + \
        ([f"{state.epochs_spent()}/{total_epochs} epochs"] if total_epochs is not None else [])
    if used:
        parts.append("budget " + ", ".join(used))
    return " | ".join(parts)


def runs_lines(runs: list[Any]) -> list[str]:
    """`raysweep runs`: one line per recorded MLflow run (id, kind, status, start, name)."""
    return [f"{run.info.run_id}  {run.data.tags.get(tag.KIND, ''):<5}  {run.info.status:<8}  "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run.info.start_time / 1000))}  {run.info.run_name}"
            for run in runs]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def trials_table(state: SweepState, space: list[str]) -> str:
    """One row per trial; several objectives: a column each (the trial's last epoch)
    and `front` marking the Pareto front's members; constraints: a `feasible` column."""
    metrics = state.metrics
    shown = metrics if state.multi_objective else [f"best {state.metric}"]
    header = ["trial", "status", "epochs", *space, *shown, "val_accuracy"]
    header += ["front"] if state.multi_objective else []
    header += ["feasible"] if state.constraints else []
    header += ["startup s", "wall s"]
    front = {r.trial_id for r in state.front()} if state.multi_objective else set()
    rows = []
    for record in state.trials.values():
        best = state.row(record) or {}
        startup = "-" if record.startup_s is None else f"{record.startup_s:.1f}"
        row = [record.trial_id, record.state.word, str(len(record.history)),
               *(fmt(record.params.get(n, "-")) for n in space),
               *(fmt(best.get(m, "-")) for m in metrics), fmt(best.get("val_accuracy", "-"))]
        row += ["*" if record.trial_id in front else ""] if state.multi_objective else []
        if state.constraints:
            ok = state.feasible(record)
            row += ["-" if ok is None else "yes" if ok else "NO"]
        rows.append([*row, startup, f"{record.wall_s:.1f}"])
    return format_table(header, rows)


def front_table(state: SweepState, space: list[str]) -> str:
    metrics = state.metrics
    rows = []
    for record in state.front():
        last = record.final(metrics) or {}
        rows.append([record.trial_id, *(fmt(last.get(m)) for m in metrics),
                     *(fmt(record.params.get(n, "-")) for n in space)])
    return format_table(["trial", *metrics, *space], rows)


def print_summary(result: SweepResult) -> None:
    """The table of trials, the best one (several objectives: the Pareto front), failed
    ones' causes, and where it all is."""
    state = result.state
    print()
    print(trials_table(state, result.space))
    best = state.best_trial()
    print()
    if state.multi_objective:
        goals = ", ".join(f"{m} {mode}" for m, mode in state.objectives)
        print(f"Pareto front ({goals}; each trial's last epoch): {len(state.front())} trial(s)")
        print(front_table(state, result.space))
        print()
    if best is None:
        ended = any(r.state.ended_well for r in state.trials.values())
        print("no trial met the constraints" if ended and state.constraints else "no trial finished")
    else:
        rule = f" (the front's best {state.metric})" if state.multi_objective else ""
        print(f"best trial{rule} {best.trial_id}: {fmt(best.params)}")
        print("  " + fmt(state.row(best) or {}))
    for record in state.in_state(TrialState.FAILED):
        print(f"failed trial {record.trial_id}: {record.error}")
    cpus, gpus = result.trial_resources
    print(f"sweep {result.sweep_id}: {len(state.trials)} trials in {result.wall_s:.0f} s "
          f"({state.resource_hours(cpus):.3g} CPU-hours, {state.resource_hours(gpus):.3g} GPU-hours); "
          f"run folder {result.sweep_dir}")
    uri = result.tracking_uri
    print(f"MLflow: {uri} experiment {result.experiment!r}, parent run {result.parent_id} "
          f"(view: mlflow ui --backend-store-uri {uri})")
