"""raysweep.report.Report: what a training process reports reads back the same on the
driver, whichever kind, with the keys Ray adds left out."""

from __future__ import annotations

from raysweep.report import EPOCHS_COMPLETED, Report


def test_an_epoch_report_reads_back_with_the_trainers_metrics():
    sent = Report.of_epoch({"epoch": 2, "val_loss": 0.5, "step": 40, "note": "text"}, first_step_unix=12.5)
    through_ray = {**sent.to_ray(), "training_iteration": 3, "time_this_iter_s": 1.5, "pid": 7, "done": False,
                   "trial_id": "abc", "date": "2026-12-07"}
    back = Report.from_ray(through_ray)
    assert back == sent
    assert back.metrics == {"epoch": 2.0, "val_loss": 0.5, "step": 40.0, EPOCHS_COMPLETED: 3.0}
    assert not back.mid_epoch and not back.preempted and back.first_step_unix == 12.5
    assert through_ray["epoch"] == 2 and through_ray[EPOCHS_COMPLETED] == 3  # (ints for Tune's schedulers)


def test_a_checkpoint_report_reads_back_as_one_with_no_metrics():
    plain, drained = Report.checkpoint(1, 17), Report.checkpoint(1, 18, drain_deadline_unix=99.0)
    for sent in (plain, drained):
        back = Report.from_ray({**sent.to_ray(), "training_iteration": 5})
        assert back == sent and back.mid_epoch and back.metrics == {}
    assert not plain.preempted and drained.preempted and Report.from_ray(drained.to_ray()).drain_deadline_unix == 99.0


def test_a_non_finite_or_non_numeric_value_is_no_metric():
    back = Report.from_ray({"epoch": 0, "a": float("nan"), "b": float("inf"), "c": True, "d": "x", "e": 1})
    assert back.metrics == {"epoch": 0.0, "e": 1.0}


def test_usage_measures_this_processs_cpu_and_peak_memory_and_travels_as_system_metrics():
    import os
    import time
    from pathlib import Path

    import numpy as np

    from raysweep.report import SYSTEM, Usage

    usage = Usage()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # (one core busy)
        pass
    busy = usage.read()
    time.sleep(0.3)
    idle = usage.read()
    # (a loaded machine gives the busy loop less than a core: compared with the idle
    # stretch, not with a fixed share)
    assert busy["cpu_percent"] > 10 * max(idle["cpu_percent"], 1.0) and idle["cpu_percent"] < 40, (busy, idle)
    # 200 MiB touched above this process's peak so far (an earlier test of the tier may
    # have left it far above the current RSS): the peak grows by about that much.
    page = os.sysconf("SC_PAGE_SIZE")
    rss_mb = int(Path("/proc/self/statm").read_text().split()[1]) * page / 2**20
    before = usage.read()["peak_rss_mb"]
    held = np.ones(int((max(0.0, before - rss_mb) + 200) * 2**20), dtype=np.uint8)
    assert usage.read()["peak_rss_mb"] >= before + 150 and held.sum() > 0
    report = Report.of_epoch({"epoch": 0, "val_loss": 1.0}, system=busy)
    back = Report.from_ray(report.to_ray())
    assert back.system == busy and back.metrics == {"epoch": 0.0, "val_loss": 1.0, EPOCHS_COMPLETED: 1.0}
    assert set(back.mlflow_metrics()) == {"epoch", "val_loss", EPOCHS_COMPLETED} | {SYSTEM + k for k in busy}
