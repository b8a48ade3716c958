"""Benchmark entries that finish: time limits, stages, failed entries, the watchdog's
alarm, the command line (raysweep.testing.bench, scripts/bench.py). No process, no Ray:
entries whose children or DDP ranks must be killed are in tests/faults/test_bench_faults.py."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from raysweep.testing import bench as bench_lib
from raysweep.testing.bench import (
    Registry,
    Watchdog,
    parse_time_limits,
    run_entries,
    run_entry,
    stage,
    time_limit,
)
from tests.support.bench_entries import entry, names


def test_an_entry_that_raises_fails_with_its_cause_and_stage_and_the_next_entry_runs(tmp_path: Path) -> None:
    entries = Registry()

    @entries.register("hangs", target="anything", table=lambda r: [], met=lambda r: True, timeout_s=1.0)
    def hangs(ctx: object) -> dict:
        stage("plain DDP baseline")
        time.sleep(60)
        return {}

    @entries.register("raises", target="anything", table=lambda r: [], met=lambda r: True)
    def raises(ctx: object) -> dict:
        with stage("plain DDP baseline"):
            pass
        with stage("raysweep dp"):
            raise RuntimeError("rank 1 gone\nsecond line of detail")

    @entries.register("fine", target="ratio <= 1.05", table=lambda r: [f"ratio {r['ratio']}"],
                      met=lambda r: r["ratio"] <= 1.05)
    def fine(ctx: object) -> dict:
        stage("measure")
        return {"ratio": 1.0}

    out = tmp_path / "b.json"
    started = time.monotonic()
    assert run_entries(entries, ["hangs", "raises", "fine"], None, out=out, echo=False) is False
    assert time.monotonic() - started < 10
    written = json.loads(out.read_text())
    hung, raised, ran = written["results"]
    assert hung["timed_out"] is True and hung["stage"] == "plain DDP baseline" and hung["met"] is False
    assert raised == {**raised, "met": False, "timed_out": False, "stage": "raysweep dp",
                      "error": "RuntimeError: rank 1 gone"}
    assert names(raised["stages"]) == ["plain DDP baseline", "raysweep dp"]
    assert ran["met"] is True and ran["ratio"] == 1.0 and names(ran["stages"]) == ["measure"]
    assert written["missed"] == ["hangs", "raises"] and written["timed_out"] == ["hangs"]
    assert written["failed"] == ["hangs", "raises"]
    text = out.with_suffix(".md").read_text()
    assert "Failed: timed out after 1 s in stage 'plain DDP baseline'" in text
    assert "Failed: RuntimeError: rank 1 gone (in stage 'raysweep dp')" in text and "ratio 1.0" in text


def test_watchdog_restores_an_outer_alarm() -> None:
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.6)
        with Watchdog(30):
            time.sleep(0.1)
        assert signal.getsignal(signal.SIGALRM) is not None and 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 0.6
        time.sleep(1.0)
        assert fired == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_time_limits_and_their_precedence() -> None:
    assert time_limit(entry(lambda c: {})) == bench_lib.DEFAULT_TIMEOUT_S
    assert time_limit(entry(lambda c: {}), default=60) == 60
    assert time_limit(entry(lambda c: {}, timeout_s=900), default=60) == 900
    assert time_limit(entry(lambda c: {}, timeout_s=900), default=60, override=5) == 5
    assert time_limit(entry(lambda c: {}), default=0) is None
    assert parse_time_limits(["600", "dp=900", "step=0"], ["dp", "step"]) == (600.0, {"dp": 900.0, "step": 0.0})
    with pytest.raises(ValueError, match="no entry named 'nope'"):
        parse_time_limits(["nope=3"], ["dp"])
    with pytest.raises(ValueError, match="SECONDS"):
        parse_time_limits(["dp=soon"], ["dp"])


def test_bench_command_line_takes_entry_timeouts(bench_script: Any, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["bench.py", "--only", "step", "--entry-timeout", "nope=3"])
    with pytest.raises(SystemExit) as done:
        bench_script.main()
    err = capsys.readouterr().err
    assert done.value.code == 2 and "--entry-timeout" in err and "no entry named 'nope'" in err
    assert bench_script.ENTRIES["dp"].timeout_s == 900


def test_stages_record_their_seconds_in_order() -> None:
    def staged(ctx: object) -> dict:
        with stage("set-up"):
            with stage("inner"):
                time.sleep(0.1)
            time.sleep(0.1)  # "set-up" again
        time.sleep(0.1)  # "start" again
        stage("measure")
        stage("measure")
        return {}

    stages = run_entry(entry(staged), None)["stages"]
    stages = stages[1:] if stages[0]["stage"] == "start" else stages
    assert [s["stage"] for s in stages] == ["set-up", "inner", "set-up", "start", "measure"]
    assert all(0.08 < s["s"] < 1 for s in stages[1:4]), stages


def test_stage_outside_an_entry_is_a_no_op() -> None:
    with stage("nothing"):
        pass
    assert bench_lib.current_stage() is None and os.getpid() > 0
