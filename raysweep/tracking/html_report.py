"""`raysweep report SWEEP`: an HTML page and PNGs that explain a sweep.

Optimization history (best value so far against trials), a timeline of the sweep
(one row per host and trial slot, a bar per trial coloured by how it ended, idle time
as gaps), learning curves of every
trial (early-stopped and failed ones marked), parameter importances (Optuna's
default evaluator over the sweep's study), a parallel-coordinates view, and a table
of trials. Everything comes from the sweep's MLflow runs and its Optuna journal; the
files are written to the run folder's `report/` and attached to the parent run.
"""

from __future__ import annotations

import html
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import matplotlib
import optuna
from matplotlib import cm, colors
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from raysweep.tracking import tags as tag
from raysweep.tracking.lookup import children, client, get_run, read_record
from raysweep.tracking.pareto import minimized, pareto_front
from raysweep.tracking.study import load_study, study_dir, warm_start_marks
from raysweep.tracking.trials import TrialState

REPORT_DIR = "report"
IMAGES = {
    "history": "Optimization history",
    "timeline": "Timeline",
    "curves": "Learning curves",
    "importance": "Parameter importances",
    "parallel": "Parallel coordinates",
}


def _trials(parent_id: str, metric: str, mode: str, objectives: list[str]) -> list[dict[str, Any]]:
    mlflow = client()
    rows = []
    for run in children(get_run(parent_id)):
        tags = run.data.tags
        curve = sorted((m.step, m.value) for m in mlflow.get_metric_history(run.info.run_id, metric))
        values = [v for _, v in curve if math.isfinite(v)]
        best = (min if mode == "min" else max)(values) if values else None
        state = TrialState.from_run(run.info.status, tags)
        ended = run.info.end_time or run.info.start_time
        feasible = tags.get(tag.FEASIBLE)
        rows.append({
            "trial": tags.get(tag.TRIAL_ID, run.info.run_name), "run_id": run.info.run_id,
            "state": state, "params": json.loads(tags.get(tag.TRIAL_CONFIG, "{}")),
            "best": best, "epochs": len(curve), "curve": curve, "error": tags.get(tag.ERROR, ""),
            "duration_s": (ended - run.info.start_time) / 1000, "start": run.info.start_time,
            "end": run.info.end_time, "node": tags.get(tag.NODE, "unknown host"),
            # (the last epoch's objectives: a multi-objective trial's point)
            "final": {m: run.data.metrics[m] for m in objectives if m in run.data.metrics},
            "feasible": None if feasible is None else feasible == "True",
        })
    return rows


def _front(trials: list[dict[str, Any]], objectives: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The Pareto front of the trials that ended well and met the constraints."""
    metrics, modes = [m for m, _ in objectives], [mode for _, mode in objectives]
    candidates = [t for t in trials if t["state"].ended_well and t["feasible"] is not False
                  and all(m in t["final"] for m in metrics)]
    points = [minimized(t["final"], metrics, modes) for t in candidates]
    return [candidates[i] for i in sorted(pareto_front(points))]


def _plot_front(trials: list[dict[str, Any]], objectives: list[tuple[str, str]], path: Path) -> None:
    """Two objectives: every trial's last epoch, the front joined by a step line,
    infeasible trials as red crosses."""
    (x, x_mode), (y, y_mode) = objectives
    front = _front(trials, objectives)
    on_front = {t["run_id"] for t in front}
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    groups = {"other trials": [t for t in trials if t["run_id"] not in on_front and t["feasible"] is not False],
              "infeasible (breaks a constraint)": [t for t in trials if t["feasible"] is False]}
    for (label, group), style in zip(groups.items(), [dict(color="tab:grey", marker="o"),
                                                     dict(color="tab:red", marker="x")], strict=True):
        shown = [t for t in group if x in t["final"] and y in t["final"]]
        if shown:
            ax.scatter([t["final"][x] for t in shown], [t["final"][y] for t in shown], label=label, alpha=0.7,
                       **style)  # type: ignore[arg-type]
    ordered = sorted(front, key=lambda t: t["final"][x], reverse=x_mode == "max")
    if ordered:
        ax.step([t["final"][x] for t in ordered], [t["final"][y] for t in ordered], where="post",
                color="tab:blue", alpha=0.6)
        ax.scatter([t["final"][x] for t in ordered], [t["final"][y] for t in ordered], color="tab:blue",
                   s=60, zorder=3, label=f"Pareto front ({len(ordered)})")
        for t in ordered:
            ax.annotate(t["trial"].split(" ")[0], (t["final"][x], t["final"][y]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel(f"{x} ({x_mode})")
    ax.set_ylabel(f"{y} ({y_mode})")
    ax.set_title("Pareto front (each trial's last epoch)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _front_table(front: list[dict[str, Any]], objectives: list[tuple[str, str]]) -> str:
    esc = html.escape
    metrics = [m for m, _ in objectives]
    head = "".join(f"<th>{esc(h)}</th>" for h in ["trial", *(f"{m} ({mode})" for m, mode in objectives), "params"])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in [
        t["trial"], *(f"{t['final'][m]:.4g}" for m in metrics),
        " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())]) + "</tr>"
        for t in front)
    return f"<table><tr>{head}</tr>{body}</table>"


STATE_COLORS = {TrialState.FINISHED: "tab:green", TrialState.STOPPED_EARLY: "tab:orange",
                TrialState.FAILED: "tab:red", TrialState.KILLED: "tab:grey", TrialState.RUNNING: "tab:blue"}


def timeline_lanes(trials: list[dict[str, Any]], now_ms: float) -> list[tuple[str, int, dict[str, Any]]]:
    """(host, lane, trial) for each trial: on each host, a trial takes the first lane
    free at its start (a trial slot: as many lanes as trials ever ran there at once).
    A trial still running ends at `now_ms`."""
    out: list[tuple[str, int, dict[str, Any]]] = []
    for host in sorted({t["node"] for t in trials}):
        free_at: list[float] = []  # (per lane: when its last trial ended)
        for t in sorted((t for t in trials if t["node"] == host), key=lambda t: (t["start"], t["trial"])):
            lane = next((i for i, end in enumerate(free_at) if end <= t["start"]), len(free_at))
            if lane == len(free_at):
                free_at.append(0.0)
            free_at[lane] = t["end"] or now_ms
            out.append((host, lane, t))
    return out


def _plot_timeline(trials: list[dict[str, Any]], path: Path, now_ms: float) -> str:
    """One row per host and lane, a bar per trial from its run's start to its end,
    coloured by how it ended; returns the note (lanes, how busy they were)."""
    placed = timeline_lanes(trials, now_ms)
    rows = sorted({(host, lane) for host, lane, _ in placed})
    start = min(t["start"] for t in trials)
    end = max(t["end"] or now_ms for t in trials)
    fig = Figure(figsize=(9, 1.2 + 0.45 * len(rows)))
    ax = fig.subplots()
    busy = 0.0
    for host, lane, t in placed:
        left, width = (t["start"] - start) / 60000, ((t["end"] or now_ms) - t["start"]) / 60000
        busy += width
        ax.barh(rows.index((host, lane)), width, left=left, height=0.7, color=STATE_COLORS[t["state"]],
                edgecolor="black", linewidth=0.5)
        ax.text(left + width / 2, rows.index((host, lane)), t["trial"].split(" ")[0][-8:], ha="center",
                va="center", fontsize=6)
    ax.set_yticks(range(len(rows)), [f"{host} #{lane}" for host, lane in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("minutes since the first trial started")
    for state, color in STATE_COLORS.items():
        if any(t["state"] is state for t in trials):
            ax.barh([], [], color=color, label=state.word)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Trials over time (gaps: a slot idle)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    span = (end - start) / 60000
    share = busy / (span * len(rows)) if span > 0 else 1.0
    return (f"{len(placed)} trial(s) on {len(rows)} slot(s) over {span:.1f} min; the slots were busy "
            f"{100 * share:.0f}% of that time")


def _plot_history(trials: list[dict[str, Any]], metric: str, mode: str, path: Path) -> None:

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    xs, ys, best_so_far, best = [], [], [], None
    for i, t in enumerate(trials):
        if t["best"] is None:
            continue
        xs.append(i)
        ys.append(t["best"])
        best = t["best"] if best is None else (min if mode == "min" else max)(best, t["best"])
        best_so_far.append(best)

    ax.scatter(xs, ys, label=f"trial's best {metric}", color="tab:blue", zorder=3)
    ax.step(xs, best_so_far, where="post", color="tab:red", label="best so far")
    failed = [i for i, t in enumerate(trials) if t["best"] is None]
    if failed and ys:
        ax.scatter(failed, [min(ys)] * len(failed), marker="x", color="black", s=60, label="failed (no result)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (in start order)")
    ax.set_ylabel(metric)
    ax.set_title("Optimization history")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_curves(trials: list[dict[str, Any]], metric: str, path: Path) -> None:

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for t in trials:
        if not t["curve"]:
            continue
        steps = [s + 1 for s, _ in t["curve"]]
        values = [v for _, v in t["curve"]]
        style = {TrialState.FINISHED: "-", TrialState.STOPPED_EARLY: "--"}.get(t["state"], ":")
        line, = ax.plot(steps, values, style, marker=".", label=f"{t['trial']} ({t['state'].word})")
        if t["state"] is not TrialState.FINISHED:
            ax.plot(steps[-1], values[-1], marker="x", markersize=10, color=line.get_color())

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title("Learning curves (dashed + x: stopped early; dotted: failed)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _valued_trials(study: Any) -> Any:
    """An in-memory copy of `study` whose trials are its finished ones plus those the
    scheduler stopped (PRUNED), valued at their last epoch's metric: importance
    needs values, and early-stopped trials are most of an ASHA sweep. (Several
    objectives: the finished ones; Optuna keeps no intermediate values for them.)"""
    if len(study.directions) > 1:
        copy = optuna.create_study(directions=study.directions)
        for trial in study.trials:
            if trial.state == optuna.trial.TrialState.COMPLETE:
                copy.add_trial(trial)
        return copy
    copy = optuna.create_study(direction=study.direction)
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            copy.add_trial(trial)
        elif trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
            copy.add_trial(optuna.trial.create_trial(
                params=trial.params, distributions=trial.distributions,
                value=trial.intermediate_values[max(trial.intermediate_values)]))
    return copy


def _plot_importance(study: Any, path: Path) -> str:

    valued = _valued_trials(study)
    target = None
    if len(valued.directions) > 1:  # importance for the first objective, as a value to minimize
        sign = -1.0 if valued.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        target = lambda t: sign * t.values[0]  # noqa: E731
    with warnings.catch_warnings():  # (PED-ANOVA's reminder that a target is minimized: it is, above)
        warnings.simplefilter("ignore", UserWarning)
        importances = optuna.importance.get_param_importances(valued, target=target)
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="tab:green")
    ax.set_xlabel("importance (Optuna's default evaluator: PED-ANOVA; stopped trials at their last epoch)")
    ax.set_title("Parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return ", ".join(f"{k}: {v:.2f}" for k, v in importances.items())


def _plot_parallel(trials: list[dict[str, Any]], metric: str, path: Path) -> None:
    """One vertical axis per param (min-max scaled; categories spread evenly), the
    metric last; one line per trial, coloured by its best metric."""

    scored = [t for t in trials if t["best"] is not None]
    names = sorted({k for t in scored for k in t["params"]})
    columns = []
    for name in [*names, metric]:
        raw = [t["best"] if name == metric else t["params"].get(name) for t in scored]
        present = [v for v in raw if v is not None]  # (a conditional param a trial did not draw: a gap)
        if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            low, high = min(present), max(present)
            positive = low > 0 and high / low > 20  # log-scaled params span decades
            scale = (lambda v: math.log(v)) if positive else (lambda v: v)
            span = (scale(high) - scale(low)) or 1.0
            columns.append(([math.nan if v is None else (scale(v) - scale(low)) / span for v in raw],
                            f"{low:.3g}", f"{high:.3g}"))
        else:
            raw = ["-" if v is None else v for v in raw]
            levels = sorted({str(v) for v in raw})
            pos = {v: i / max(len(levels) - 1, 1) for i, v in enumerate(levels)}
            columns.append(([pos[str(v)] for v in raw], levels[0], levels[-1]))
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    values = [t["best"] for t in scored]
    norm = colors.Normalize(min(values), max(values))
    cmap = matplotlib.colormaps["viridis_r"]
    for i, _ in enumerate(scored):
        ax.plot(range(len(columns)), [c[0][i] for c in columns], color=cmap(norm(values[i])), alpha=0.8)
    for x, (_, low, high) in enumerate(columns):
        ax.axvline(x, color="grey", linewidth=0.8)
        ax.text(x, -0.06, low, ha="center", va="top", fontsize=7)
        ax.text(x, 1.06, high, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(columns)), [*names, metric])
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    ax.set_title("Parallel coordinates (colour: best " + metric + ")", pad=18)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _html(title: str, record: dict[str, Any], trials: list[dict[str, Any]], metric: str, images: dict[str, str],
          notes: dict[str, str], objectives: list[tuple[str, str]]) -> str:
    esc = html.escape
    names = sorted({k for t in trials for k in t["params"]})
    several = len(objectives) > 1
    constrained = any(t["feasible"] is not None for t in trials)
    on_front = {t["run_id"] for t in _front(trials, objectives)} if several else set()
    shown = [f"{m} (last epoch)" for m, _ in objectives] + ["Pareto front"] if several else [f"best {metric}"]
    head = "".join(f"<th>{esc(h)}</th>" for h in ["trial", "status", *names, *shown,
                                                       *(["feasible"] if constrained else []), "epochs",
                                                       "duration s", "MLflow run"])
    body = []
    for t in trials:
        cells = [t["trial"], t["state"].word + (f": {t['error']}" if t["error"] else "")]
        cells += [f"{t['params'][n]:.4g}" if isinstance(t["params"].get(n), float) else str(t["params"].get(n, ""))
                  for n in names]
        if several:
            cells += [f"{t['final'][m]:.4g}" if m in t["final"] else "-" for m, _ in objectives]
            cells += ["yes" if t["run_id"] in on_front else ""]
        else:
            cells += ["-" if t["best"] is None else f"{t['best']:.4g}"]
        if constrained:
            cells += ["-" if t["feasible"] is None else "yes" if t["feasible"] else "NO (infeasible)"]
        cells += [str(t["epochs"]), f"{t['duration_s']:.1f}", t["run_id"]]
        body.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    sections = []
    if several:
        goals = ", ".join(f"{m} {mode}" for m, mode in objectives)
        front = _front(trials, objectives)
        plot = (f'<img src="{esc(images["pareto"])}" alt="Pareto front">' if "pareto" in images else "")
        sections.append(f'<section id="pareto"><h2>Pareto front</h2><p>{len(front)} trial(s) on the front of '
                        f'{esc(goals)} (each trial\'s last epoch; trials that ended well and met the constraints)'
                        f'</p>{plot}{_front_table(front, objectives)}</section>')
    for key, heading in IMAGES.items():
        content = (f'<img src="{esc(images[key])}" alt="{esc(heading)}">' if key in images
                   else f"<p>not drawn: {esc(notes.get(key, ''))}</p>")
        extra = f"<p>{esc(notes[key])}</p>" if key in images and key in notes else ""
        sections.append(f'<section id="{key}"><h2>{esc(heading)}</h2>{content}{extra}</section>')
    warm_note = f"<p>{esc(notes['warm_start'])}</p>" if "warm_start" in notes else ""
    git = record.get("git", {})
    facts = (f"spec {esc(str(record.get('spec_file')))}; git {esc(str(git.get('commit')))}"
             f"{' (dirty)' if git.get('dirty') else ''}; data sha256 {esc(record['data']['sha256'][:12])}; "
             f"seed {record['seeds']['seed']}")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}img{{max-width:100%}}</style></head>
<body><h1>{esc(title)}</h1><p>{facts}</p>
{''.join(sections)}
<section id="trials"><h2>Trials</h2>{warm_note}<table><tr>{head}</tr>{''.join(body)}</table></section>
</body></html>
"""


def write_report(parent_id: str, out: str | None = None) -> Path:
    """Draw the report of the sweep whose parent run is `parent_id`; returns the HTML path."""
    parent = get_run(parent_id)
    record = read_record(parent)
    spec = record["spec"]
    metrics, modes = spec["scheduler"]["metric"], spec["scheduler"]["mode"]
    objectives = list(zip(metrics, modes, strict=True)) if isinstance(metrics, list) else [(metrics, modes)]
    metric, mode = objectives[0]
    folder = parent.data.tags.get(tag.RUN_FOLDER, "")
    target = Path(out) if out else (Path(folder) / REPORT_DIR if folder and "://" not in folder
                                    else Path(study_dir(folder, spec["name"])) / REPORT_DIR)
    target.mkdir(parents=True, exist_ok=True)
    trials = _trials(parent_id, metric, mode, [m for m, _ in objectives])
    images: dict[str, str] = {}
    notes: dict[str, str] = {}
    if len(objectives) == 2:
        _plot_front(trials, objectives, target / "pareto.png")
        images["pareto"] = "pareto.png"
    _plot_history(trials, metric, mode, target / "history.png")
    images["history"] = "history.png"
    _plot_curves(trials, metric, target / "curves.png")
    images["curves"] = "curves.png"
    if trials:
        notes["timeline"] = _plot_timeline(trials, target / "timeline.png", time.time() * 1000)
        images["timeline"] = "timeline.png"
    else:
        notes["timeline"] = "no trials"
    try:
        study = load_study(study_dir(folder, spec["name"]), spec["name"])
    except Exception as exc:  # no study (a sweep on object storage read elsewhere)
        study, notes["importance"] = None, f"{type(exc).__name__}: {exc}"
    warm, added = warm_start_marks(study) if study is not None else ({}, 0)
    for t in trials:
        if t["trial"] in warm:
            t["trial"] = f"{t['trial']} (warm start from {warm[t['trial']]})"
    if added:
        notes["warm_start"] = f"warm start: {added} finished trial(s) of an earlier sweep in the study"
    try:
        if study is not None:
            notes["importance"] = _plot_importance(study, target / "importance.png")
            images["importance"] = "importance.png"
    except Exception as exc:  # too few finished trials, or one value per param
        notes["importance"] = f"{type(exc).__name__}: {exc}"
    if sum(t["best"] is not None for t in trials) >= 2 and any(t["params"] for t in trials):
        _plot_parallel(trials, metric, target / "parallel.png")
        images["parallel"] = "parallel.png"
    else:
        notes["parallel"] = "fewer than two trials with results"
    page = target / "report.html"
    page.write_text(_html(f"Sweep {parent.info.run_name}", record, trials, metric, images, notes, objectives))
    client().log_artifacts(parent_id, str(target), REPORT_DIR)
    return page
