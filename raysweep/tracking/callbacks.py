"""A sweep's tracking: trial events in, MLflow runs and console lines out.

`SweepTracker` joins three parts that each do one thing: `SweepState` (what is
known about the trials), `SweepWriter` (a parent MLflow run per sweep, a child run
per trial, metrics batched with `step=epoch`, the right end status) and
`ConsolePrinter` (one line per trial event). It takes plain events (trial id,
config, result dict), so it runs and is tested without Ray; the Tune callback in
`raysweep.driver.sweep` forwards Tune's events to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from raysweep.config.constraints import Constraint
from raysweep.report import SYSTEM, Report
from raysweep.tracking import tags as tag
from raysweep.tracking.console import ConsolePrinter, live_status
from raysweep.tracking.store import RunStore, record_preemption
from raysweep.tracking.trials import SweepState, TrialRecord, TrialState

HELD_S, CPU_HOURS, GPU_HOURS = f"{SYSTEM}held_s", f"{SYSTEM}cpu_hours", f"{SYSTEM}gpu_hours"
"""A trial's (and the parent run's, for the sweep) resource use: seconds it held its
workers, and those times its CPUs and GPUs, in hours."""


class SweepWriter:
    """The MLflow side of a sweep: written from the driver only."""

    def __init__(self, store: RunStore, sweep_key: str, parent_id: str,
                 trial_resources: tuple[float, float] = (0.0, 0.0)) -> None:
        self.store, self.sweep_key, self.parent_id = store, sweep_key, parent_id
        self.trial_resources = trial_resources

    def open_trial(self, trial_id: str, config: dict[str, Any]) -> str:
        """The trial's child run (re-attached by its key when the sweep resumes)."""
        run_id = self.store.open(f"{self.sweep_key}/{trial_id}", run_name=trial_id, parent_id=self.parent_id,
                                 params=config)
        self.store.set_tags(run_id, {tag.TRIAL_ID: trial_id, tag.KIND: "trial",
                                     tag.TRIAL_CONFIG: json.dumps(config, default=str)})
        return run_id

    def log_result(self, record: TrialRecord, values: dict[str, float]) -> None:
        self.store.log_metrics(record.run_id, values, step=int(values.get("epoch", 0)))

    def close_trial(self, record: TrialRecord) -> None:
        cpus, gpus = self.trial_resources
        held = record.held_now()
        self.store.log_metrics(record.run_id, {HELD_S: held, CPU_HOURS: held * cpus / 3600,
                                               GPU_HOURS: held * gpus / 3600}, 0)
        tags: dict[str, Any] = {tag.STATE: record.state.name,
                                tag.EARLY_STOPPED: record.state is TrialState.STOPPED_EARLY}
        if record.checkpoint:
            tags[tag.CHECKPOINT] = record.checkpoint
        if record.error:
            tags[tag.ERROR] = record.error[:5000]
        self.store.set_tags(record.run_id, tags)
        self.store.close(record.run_id, record.state.mlflow_status)

    def read_trials(self) -> list[TrialRecord]:
        """The trials an earlier driver of this sweep recorded, read back."""
        records = []
        for run in self.store.children(self.parent_id):
            tags = run.data.tags
            if not tags.get(tag.TRIAL_ID):
                continue
            rows: dict[int, dict[str, float]] = {}
            for key in run.data.metrics:
                if key.startswith(SYSTEM):  # (resource use: not the trainer's metrics)
                    continue
                for m in self.store.metric_history(run.info.run_id, key):
                    rows.setdefault(m.step, {"epoch": float(m.step)})[key] = m.value
            records.append(TrialRecord(
                tags[tag.TRIAL_ID], run.info.run_id, json.loads(tags.get(tag.TRIAL_CONFIG, "{}")),
                history=[rows[s] for s in sorted(rows)], state=TrialState.from_run(run.info.status, tags),
                error=tags.get(tag.ERROR, ""), started=run.info.start_time / 1000,
                ended=(run.info.end_time or 0) / 1000 or None, checkpoint=tags.get(tag.CHECKPOINT),
                held_s=float(run.data.metrics.get(HELD_S, 0.0))))
        return records

    def resolve_runs(self, state: SweepState) -> None:
        """A store that writes behind (raysweep.tracking.buffer) hands out stand-in run
        ids: the real ones, once every queued write was sent."""
        resolve = getattr(self.store, "resolve", None)
        if resolve is not None:
            for record in state.trials.values():
                record.run_id = resolve(record.run_id)

    def flush(self) -> None:
        flush = getattr(self.store, "flush", None)
        if flush is not None:
            flush()

    def close_sweep(self, state: SweepState, status: str) -> None:
        """The parent run gets the best trial's metrics (several objectives: the Pareto
        front too) and `status`."""
        best = state.best_trial()
        if state.multi_objective:
            front = [{"trial_id": r.trial_id, "run_id": r.run_id, **(r.final(state.metrics) or {})}
                     for r in state.front()]
            text = json.dumps(front, default=str)
            self.store.set_tags(self.parent_id, {tag.OBJECTIVES: json.dumps(state.objectives),
                                                 tag.PARETO_FRONT: text if len(text) <= 5000 else
                                                 "(see the artifact pareto_front.json)"})
            self.store.log_text(self.parent_id, json.dumps(front, indent=1, default=str), "pareto_front.json")
        if best is not None:
            metrics = state.row(best) or {}
            self.store.set_tags(self.parent_id, {
                tag.BEST_TRIAL_ID: best.trial_id,
                tag.BEST_RUN_ID: best.run_id,
                **{f"{tag.BEST_PREFIX}{k}": v for k, v in metrics.items()},
            })
            self.store.log_metrics(self.parent_id, {f"best_{k}": v for k, v in metrics.items()}, 0)
        cpus, gpus = self.trial_resources
        self.store.log_metrics(self.parent_id, {CPU_HOURS: state.resource_hours(cpus),
                                                GPU_HOURS: state.resource_hours(gpus)}, 0)
        self.store.close(self.parent_id, status)


class SweepTracker:
    """Trial events -> SweepState, MLflow (SweepWriter) and the console (ConsolePrinter).

    `trial_resources`: the (CPUs, GPUs) one trial's workers hold, for the CPU- and
    GPU-hours each trial and the sweep used (MLflow system/cpu_hours, system/gpu_hours;
    budget.max_gpu_hours)."""

    def __init__(self, store: RunStore, sweep_key: str, parent_id: str, metric: str,
                 mode: str, max_epochs: int, echo: bool = True, objectives: Sequence[tuple[str, str]] = (),
                 constraints: Sequence[Constraint] = (), trial_resources: tuple[float, float] = (0.0, 0.0),
                 budget: tuple[int | None, int | None] = (None, None)) -> None:
        self.state = SweepState(metric, mode, max_epochs, objectives, constraints)
        self.writer = SweepWriter(store, sweep_key, parent_id, trial_resources)
        started = time.time()
        self.printer = ConsolePrinter(metric, echo, status=lambda: live_status(self.state, started, *budget))

    @property
    def trials(self) -> dict[str, TrialRecord]:
        return self.state.trials

    def best_trial(self) -> TrialRecord | None:
        return self.state.best_trial()

    def _record(self, trial_id: str, config: dict[str, Any]) -> TrialRecord:
        record = self.state.trials.get(trial_id)
        if record is None:
            record = self.state.add(TrialRecord(trial_id, self.writer.open_trial(trial_id, config), dict(config)))
        return record

    def trial_started(self, trial_id: str, config: dict[str, Any]) -> None:
        record = self._record(trial_id, config)
        if record.state is not TrialState.RUNNING:  # a resumed sweep runs a lost trial again
            record.state, record.ended = TrialState.RUNNING, None
            self.writer.open_trial(trial_id, config)
        if record.running_since is None:
            record.running_since = time.time()
        self.printer.started(trial_id, config)

    def trial_result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        record = self._record(trial_id, config)
        report = Report.from_ray(result)
        node = result.get("node_ip")
        if node and node != record.node:
            record.node = str(node)
            self.writer.store.set_tags(record.run_id, {tag.NODE: record.node})
        record.preemptions = record_preemption(self.writer.store, record.run_id, report, record.preemptions,
                                               lambda said: self.printer.preempted(trial_id, said))
        if not report.mid_epoch:  # (a checkpoint's report has no epoch metrics to log)
            values = dict(report.metrics)
            is_best = self.state.result(trial_id, values, report.first_step_unix, report.report_unix)
            self.writer.log_result(record, {**values, **report.system_metrics()})
            self.printer.result(record, values, is_best, self.state.best_so_far)
        if result.get("checkpoint_path"):  # (a worker-group trial's: Train stored it)
            self.trial_checkpoint(trial_id, config, str(result["checkpoint_path"]))

    def trial_checkpoint(self, trial_id: str, config: dict[str, Any], path: str) -> None:
        """A checkpoint of the trial that its storage holds whole: recorded on its run
        (`raysweep.checkpoint`) after the epoch's metrics, so a resumed sweep, which
        continues the trial from the checkpoint MLflow names, logs no epoch twice
        unless the driver was lost between the two writes (then the epoch after it
        is logged again, none is missing)."""
        record = self._record(trial_id, config)
        if path != record.checkpoint:
            record.checkpoint = path
            self.writer.store.set_tags(record.run_id, {tag.CHECKPOINT: path})

    def trial_completed(self, trial_id: str, config: dict[str, Any], checkpoint: str | None = None) -> None:
        self._record(trial_id, config)
        record = self.state.complete(trial_id, checkpoint)
        if self.state.constraints and record.history:
            last = record.history[-1]
            self.writer.store.set_tags(record.run_id, {
                tag.FEASIBLE: bool(self.state.feasible(record)),
                tag.CONSTRAINT_VIOLATIONS: json.dumps({str(c): c.violation(last) for c in self.state.constraints})})
        self.writer.close_trial(record)
        self.printer.ended(record)

    def trial_retried(self, trial_id: str, config: dict[str, Any], failures: int, error: str) -> None:
        """A failed trial that runs again from its latest checkpoint: one line, and the
        count of its failures on its MLflow run (`raysweep.failures`)."""
        record = self._record(trial_id, config)
        self.writer.store.set_tags(record.run_id, {tag.FAILURES: str(failures)})
        self.printer.retried(trial_id, failures, error)

    def trial_preempted(self, trial_id: str, config: dict[str, Any], cause: str) -> None:
        """A trial whose node was taken away (a drain notice, a spot reclaim) runs again
        from its latest checkpoint, without spending a failure: one line."""
        self._record(trial_id, config)
        self.printer.moved(trial_id, cause)

    def trial_failed(self, trial_id: str, config: dict[str, Any], error: str) -> None:
        self._record(trial_id, config)
        record = self.state.fail(trial_id, error)
        self.writer.close_trial(record)
        self.printer.ended(record)

    def load_existing(self) -> int:
        """A resumed sweep: earlier trials read back from MLflow, so the summary, the
        best trial and the running best include them. Returns how many."""
        for record in self.writer.read_trials():
            self.state.add(record)
        return len(self.state.trials)

    def close(self, status: str) -> None:
        """End the sweep: trials still running were lost (closed KILLED, or with the
        sweep's own failure), the parent run gets the best trial and `status`."""
        self.printer.close()
        lost_as = TrialState.FAILED if status == "FAILED" else TrialState.KILLED
        for record in self.state.end(lost_as):
            self.writer.close_trial(record)
        self.writer.resolve_runs(self.state)
        self.writer.close_sweep(self.state, status)
        self.writer.flush()
