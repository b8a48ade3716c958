"""What a training process reports to the driver, as one type.

Ray Train and Tune carry a report as a flat dict of numbers; `Report.to_ray` writes
one and `Report.from_ray` reads one back (with the keys Ray adds left out), so the
key names live here only. Two kinds: an epoch's report (the trainer's metrics, with
`epoch`) and a mid-epoch one (`step` set; no metrics to log): a checkpoint's (the data
cursor it saved, `preempted` when a drain notice made it) or a stop's (`stop_reason`:
the run ends there as an early stop, e.g. a non-finite loss under `failure.on_nan: stop`).
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TypeGuard

MID_EPOCH = "mid_epoch"
PREEMPTED = "preempted"
STOP_REASON = "stop_reason"
SYSTEM = "system/"
"""Prefix of the resource-use keys of a report (MLflow's own name for system metrics)."""
EPOCHS_COMPLETED = "epochs_completed"
"""Completed epochs, the schedulers' clock (ASHA's grace period counts them)."""
_STEP, _REPORTED, _FIRST_STEP, _DEADLINE = "step", "report_unix", "first_step_unix", "drain_deadline_unix"

RAY_ADDED = {"done", "training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "time_since_restore",
             "iterations_since_restore", "pid", "trial_id", "date", "hostname", "node_ip", "checkpoint_dir_name",
             "should_checkpoint", "config", "experiment_tag", "checkpoint_path"}
"""Keys Ray Train and Tune add to a report (not the trainer's metrics)."""
NOT_METRICS = RAY_ADDED | {_REPORTED, _FIRST_STEP}
"""Keys of an epoch's report that are not the trainer's metrics."""


@dataclass(frozen=True)
class Report:
    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    """The trainer's own finite numbers, `epoch` and `epochs_completed` among them (an
    epoch's report; empty for a mid-epoch one)."""
    step: int | None = None
    """A mid-epoch checkpoint's cursor (the next batch of `epoch`); None: an epoch's report."""
    preempted: bool = False
    drain_deadline_unix: float | None = None
    report_unix: float | None = None
    first_step_unix: float | None = None
    """When the run's first training step began (its first epoch's report only)."""
    system: dict[str, float] = field(default_factory=dict)
    """What the training processes used during the epoch (`usage`: CPU, peak memory),
    logged as MLflow's `system/` metrics, never read as the trainer's."""
    stop_reason: str | None = None
    """A stop's report: why the run ends at (`epoch`, `step`) with `epoch` epochs done."""

    @property
    def mid_epoch(self) -> bool:
        return self.step is not None

    @classmethod
    def of_epoch(cls, metrics: dict[str, Any], first_step_unix: float | None = None,
                 system: dict[str, float] | None = None) -> Report:
        """An epoch's report from the trainer's metrics (`epoch` 0-based among them)."""
        epoch = int(metrics["epoch"])
        values = {k: float(v) for k, v in metrics.items() if _number(v) and not k.startswith(SYSTEM)}
        return cls(epoch, {**values, EPOCHS_COMPLETED: float(epoch + 1)}, report_unix=time.time(),
                   first_step_unix=first_step_unix, system=dict(system or {}))

    @classmethod
    def checkpoint(cls, epoch: int, step: int, drain_deadline_unix: float | None = None) -> Report:
        """A mid-epoch checkpoint's report; `drain_deadline_unix` set: a drain notice's."""
        return cls(epoch, step=step, preempted=drain_deadline_unix is not None,
                   drain_deadline_unix=drain_deadline_unix, report_unix=time.time())

    @classmethod
    def stopped(cls, epoch: int, step: int, reason: str) -> Report:
        """The run stops inside `epoch` (before batch `step`): `epoch` epochs were completed."""
        return cls(epoch, step=step, stop_reason=reason, report_unix=time.time())

    def to_ray(self) -> dict[str, Any]:
        """The flat dict Ray Train / Tune carry."""
        out: dict[str, Any] = {**self.metrics, "epoch": self.epoch}
        if self.stop_reason is not None:  # (the schedulers' and the searcher's clock: epochs done)
            out[STOP_REASON], out[EPOCHS_COMPLETED] = self.stop_reason, self.epoch
        if EPOCHS_COMPLETED in out:
            out[EPOCHS_COMPLETED] = int(out[EPOCHS_COMPLETED])
        for key, value in ((_STEP, self.step), (_REPORTED, self.report_unix), (_FIRST_STEP, self.first_step_unix),
                           (_DEADLINE, self.drain_deadline_unix)):
            if value is not None:
                out[key] = value
        out.update(self.system_metrics())
        if self.mid_epoch:
            out[MID_EPOCH] = 1
        if self.preempted:
            out[PREEMPTED] = 1
        return out

    @classmethod
    def from_ray(cls, result: dict[str, Any]) -> Report:
        """A report back from what Ray delivered (Ray's own keys left out; a non-finite
        metric, which the trainer's context refuses to send, left out too)."""
        def number(key: str) -> float | None:
            value = result.get(key)
            return float(value) if _number(value) else None

        step = number(_STEP) if result.get(MID_EPOCH) else None
        finite = {k: float(v) for k, v in result.items() if _number(v) and math.isfinite(float(v))}
        metrics = {} if step is not None else \
            {k: v for k, v in finite.items() if k not in NOT_METRICS and not k.startswith(SYSTEM)}
        system = {k.removeprefix(SYSTEM): v for k, v in finite.items() if k.startswith(SYSTEM)}
        reason = result.get(STOP_REASON) if step is not None else None
        return cls(int(result.get("epoch", 0)), metrics, None if step is None else int(step),
                   bool(result.get(PREEMPTED)), number(_DEADLINE), number(_REPORTED), number(_FIRST_STEP), system,
                   str(reason) if reason is not None else None)

    def system_metrics(self) -> dict[str, float]:
        """The resource use as MLflow's `system/...` metrics."""
        return {SYSTEM + k: v for k, v in self.system.items()}

    def mlflow_metrics(self) -> dict[str, float]:
        """What MLflow logs for an epoch's report: the trainer's metrics and `system/...`."""
        return {**self.metrics, **self.system_metrics()}


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Usage:
    """This process's resource use between two reads: CPU (100 = one core busy the whole
    time) and peak resident memory, from getrusage (no extra dependency), plus the peak
    GPU memory torch allocated on `device` when it is a CUDA device."""

    def __init__(self) -> None:
        self._mark = (time.monotonic(), self._cpu_s())

    @staticmethod
    def _cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def read(self, device: Any = None) -> dict[str, float]:
        wall, cpu = time.monotonic(), self._cpu_s()
        (wall0, cpu0), self._mark = self._mark, (wall, cpu)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # (KiB on Linux, bytes on macOS)
        peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 1024
        out = {"cpu_percent": 100 * (cpu - cpu0) / max(wall - wall0, 1e-9), "peak_rss_mb": peak_mb}
        if device is not None and getattr(device, "type", "") == "cuda":
            import torch

            out["gpu_peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        return out
