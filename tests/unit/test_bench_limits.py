"""The benchmark runner's parts that need no process (benchmarks.core, scripts/bench.py):
time limits and their precedence, stages, an entry run here that raises, interleaved
pairs and the median they decide on, the command line. Entries run in their own
processes, killed at their limits: tests/faults/test_bench_faults.py."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks import core
from benchmarks.core import (
    interleave,
    on_median,
    paired,
    parse_time_limits,
    read_stage_file,
    run_entry,
    spread,
    spread_text,
    stage,
    time_limit,
)
from tests.support.bench_entries import entry, names


def test_time_limits_and_their_precedence() -> None:
    assert time_limit(entry(lambda c: {})) == core.DEFAULT_TIMEOUT_S
    assert time_limit(entry(lambda c: {}), default=60) == 60
    assert time_limit(entry(lambda c: {}, timeout_s=900), default=60) == 900
    assert time_limit(entry(lambda c: {}, timeout_s=900), default=60, override=5) == 5
    assert time_limit(entry(lambda c: {}), default=0) is None
    assert parse_time_limits(["600", "dp=900", "step=0"], ["dp", "step"]) == (600.0, {"dp": 900.0, "step": 0.0})
    with pytest.raises(ValueError, match="no entry named 'nope'"):
        parse_time_limits(["nope=3"], ["dp"])
    with pytest.raises(ValueError, match="SECONDS"):
        parse_time_limits(["dp=soon"], ["dp"])


def test_bench_command_line_takes_entry_timeouts_and_pairs(bench_script: Any, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in ((["--only", "step", "--entry-timeout", "nope=3"], "no entry named 'nope'"),
                          (["--only", "step", "--pairs", "0"], "--pairs: at least 1")):
        monkeypatch.setattr(sys, "argv", ["bench.py", *argv])
        with pytest.raises(SystemExit) as done:
            bench_script.main()
        err = capsys.readouterr().err
        assert done.value.code == 2 and message in err, err
    assert bench_script.ENTRIES["dp"].timeout_s == 1200
    assert {e.module for e in bench_script.ENTRIES.values()} >= {"benchmarks.step", "benchmarks.dp",
                                                                 "benchmarks.ingest", "benchmarks.tracking"}


def test_an_entry_run_here_that_raises_fails_with_its_cause_and_stage() -> None:
    calls: list[str] = []

    def raises(ctx: object) -> dict:
        with stage("plain DDP baseline"):
            pass
        with stage("raysweep dp"):
            raise RuntimeError("rank 1 gone\nsecond line of detail")

    result = run_entry(entry(raises), None, on_failure=lambda: calls.append("cleaned"))
    assert result == {**result, "met": False, "timed_out": False, "stage": "raysweep dp",
                      "error": "RuntimeError: rank 1 gone"}
    assert names(result["stages"]) == ["plain DDP baseline", "raysweep dp"] and calls == ["cleaned"]


def test_stages_record_their_seconds_in_order_and_reach_the_stage_file(tmp_path: Path) -> None:
    def staged(ctx: object) -> dict:
        with stage("set-up"):
            with stage("inner"):
                time.sleep(0.1)
            time.sleep(0.1)  # "set-up" again
        time.sleep(0.1)  # "start" again
        stage("measure")
        stage("measure")
        return {}

    path = tmp_path / "stages.jsonl"
    stages = run_entry(entry(staged), None, stage_file=str(path))["stages"]
    stages = stages[1:] if stages[0]["stage"] == "start" else stages
    assert [s["stage"] for s in stages] == ["set-up", "inner", "set-up", "start", "measure"]
    assert all(0.08 < s["s"] < 1 for s in stages[1:4]), stages
    last, timeline = read_stage_file(path)
    assert last == "measure" and [s["stage"] for s in timeline][-1] == "measure"
    with path.open("a") as f:
        f.write('{"stage": "cut sho')  # a line cut short by a kill
    assert read_stage_file(path)[0] == "measure"
    assert read_stage_file(tmp_path / "none") == (None, [])


def test_stage_outside_an_entry_is_a_no_op() -> None:
    with stage("nothing"):
        pass
    assert core.current_stage() is None


# ---------------------------------------------------------------- interleaved pairs


def test_interleave_alternates_the_order_and_names_each_run_a_stage() -> None:
    order: list[tuple[str, int]] = []

    def side(name: str) -> Any:
        def run(i: int) -> float:
            order.append((name, i))
            return {"base": 2.0, "ours": 2.2}[name] + i
        return run

    def paired_entry(ctx: object) -> dict:
        return interleave(3, {"base": side("base"), "ours": side("ours")})

    result = run_entry(entry(paired_entry), None)
    assert order == [("base", 0), ("ours", 0), ("ours", 1), ("base", 1), ("base", 2), ("ours", 2)]
    assert result["base"] == [2.0, 3.0, 4.0] and result["ours"] == [2.2, 3.2, 4.2]
    assert names(result["stages"])[:3] == ["base (pair 1 of 3)", "ours (pair 1 of 3)", "ours (pair 2 of 3)"]
    with pytest.raises(ValueError):
        interleave(0, {"a": lambda i: 1.0})


def test_spread_of_per_pair_ratios() -> None:
    s = paired([1.1, 2.0, 3.3, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 2.0])
    assert s["ratios"] == [1.1, 1.0, 1.1, 1.0, 2.5] and s["pairs"] == 5
    assert s["median"] == pytest.approx(1.1) and s["min"] == 1.0 and s["max"] == 2.5
    assert s["q1"] == pytest.approx(1.0) and s["q3"] == pytest.approx(1.1)
    assert spread_text(s) == "1.1 (1-2.5; IQR 1-1.1; 5 pairs)"
    with pytest.raises(ValueError, match="not pairs"):
        paired([1.0], [1.0, 2.0])
    assert spread([3.0])["median"] == 3.0 and spread([3.0])["q1"] == 3.0


def test_met_is_decided_on_the_median_not_the_mean() -> None:
    one_slow_pair = spread([0.98, 1.0, 1.01, 1.02, 2.5])  # a pair hit by other work on the machine
    assert statistics.mean(one_slow_pair["ratios"]) > 1.05 and one_slow_pair["median"] <= 1.05
    assert on_median(one_slow_pair, lambda m: m <= 1.05) is True
    one_fast_pair = spread([1.08, 1.1, 1.09, 0.3, 1.07])
    assert statistics.mean(one_fast_pair["ratios"]) <= 1.05 and one_fast_pair["median"] > 1.05
    assert on_median(one_fast_pair, lambda m: m <= 1.05) is False
    assert on_median(spread([1.0, 1.0, 1.0, 1.0]), lambda m: m <= 1.05) is None  # under MIN_PAIRS


def test_the_paired_entries_decide_on_the_median(bench_script: Any) -> None:
    entries = bench_script.ENTRIES
    slow, fast = [0.98, 1.0, 1.01, 1.02, 2.5], [1.08, 1.1, 1.09, 0.3, 1.07]

    def dp(ratios: list[float]) -> dict:
        return {"rows": [{"name": "plain DDP (gloo)", "step_ratio": spread([1.0] * len(ratios))},
                         {"name": "raysweep", "step_ratio": spread(ratios)}]}

    assert entries["dp"].met(dp(slow)) is True and entries["dp"].met(dp(fast)) is False
    assert entries["dp"].met(dp(slow[:4])) is None

    def rates(name: str, ratios: list[float]) -> dict:
        return {"rows": [{"name": name, "rate_ratio": spread([1 / r for r in ratios])}]}

    for key, name in (("ingest", "raysweep reader + shard iterator"), ("stream", "raysweep stream loader")):
        assert entries[key].met(rates(name, [1.0, 1.0, 1.05, 1.0, 5.0])) is True  # one pair at 0.2x
        assert entries[key].met(rates(name, [2.0, 2.0, 2.0, 0.2, 0.2])) is False  # mean rate ratio 2.1

    def tracking(costs: list[float]) -> dict:
        return {"rows": [{"name": "raysweep MLflow logging", "cost_pct": spread(costs)}]}

    assert entries["tracking"].met(tracking([1.0, 1.5, 0.5, 1.9, 40.0])) is True
    assert entries["tracking"].met(tracking([3.0, 2.5, 4.0, -20.0, -15.0])) is False

    def step(added: list[float], base_ms: float = 1.0) -> dict:
        ratio = spread([1 + a / base_ms for a in added])
        row = {"ratio": ratio, "added_spread": spread(added), "ms_per_step": base_ms}
        return {"baseline": "hand-written loop", "rows": [
            {"name": "hand-written loop", **row, "ratio": spread([1.0] * len(added))},
            {"name": "raysweep plain", **row}]}

    assert entries["step"].met(step([0.1, 0.2, 0.0, 0.3, 5.0])) is True
    assert entries["step"].met(step([0.6, 0.7, 0.8, -2.0, -2.0])) is False
