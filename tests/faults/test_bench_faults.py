"""Benchmark entries that hang, fail or are interrupted with processes of their own
(raysweep.testing.bench, scripts/bench.py's plain_ddp): the entry's children (a
subprocess, a multiprocessing child, DDP ranks) are killed at its time limit, on
Ctrl-C and on failure, and a rank that exits early or hangs fails the baseline fast.
No Ray. The process-free cases: tests/unit/test_bench_limits.py."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from raysweep.testing import bench as bench_lib
from raysweep.testing.bench import run_entry, stage
from tests.support.bench_entries import entry, names

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]





def gone(pid: int, within: float = 5) -> bool:
    """The process is dead within `within` s (a zombie waiting for its parent counts as dead)."""
    deadline = time.monotonic() + within
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def wait_child(children: list[Any]) -> None:
    """Block in a join on a child process, the way the plain-DDP baseline hung."""
    proc = subprocess.Popen(SLEEPER)
    children.append(proc)
    proc.wait()


def join_mp_child(children: list[Any]) -> None:
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(120,))
    process.start()
    children.append(process)
    process.join()


def sleep_in_python(children: list[Any]) -> None:
    children.append(subprocess.Popen(SLEEPER))  # left running: killed with the failed entry
    time.sleep(120)


@pytest.mark.parametrize("block", [wait_child, join_mp_child, sleep_in_python])
def test_an_entry_that_blocks_times_out_with_its_stage_and_its_children_killed(
        block: Callable[[list[Any]], None]) -> None:
    children: list[Any] = []

    def hang(ctx: object) -> dict:
        stage("set-up")
        with stage("waiting"):
            block(children)
        return {}

    started = time.monotonic()
    result = run_entry(entry(hang, timeout_s=1.5), None)
    took = time.monotonic() - started
    assert took < 1.5 + 5, took
    assert result["met"] is False and result["timed_out"] is True and result["stage"] == "waiting"
    assert result["error"] == "timed out after 1.5 s in stage 'waiting'"
    assert result["time_limit_s"] == 1.5 and names(result["stages"]) == ["set-up", "waiting"]
    (child,) = children
    assert any(k.startswith(f"{child.pid} ") for k in result["killed"]), result
    assert gone(child.pid)


def test_a_wait_that_signals_cannot_reach_ends_when_the_thread_kills_its_child(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """C code that never polls for signals (here: SIGALRM blocked while waiting on a
    child) is ended by the watchdog's thread killing the entry's processes."""
    monkeypatch.setattr(bench_lib, "KILL_GRACE_S", 0.5)
    children: list[Any] = []

    def deaf(ctx: object) -> dict:
        stage("deaf wait")
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            wait_child(children)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})  # the pending alarm raises here
        return {"finished": True}

    started = time.monotonic()
    result = run_entry(entry(deaf), None, timeout_s=1.0)
    assert time.monotonic() - started < 6
    assert result["timed_out"] is True and result["stage"] == "deaf wait" and "finished" not in result
    assert any(k.startswith(f"{children[0].pid} ") for k in result["killed_at_limit"]), result
    assert gone(children[0].pid)


def test_ctrl_c_stops_the_run_and_kills_what_the_entry_started() -> None:
    children: list[Any] = []

    def interrupted(ctx: object) -> dict:
        children.append(subprocess.Popen(SLEEPER))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_entry(entry(interrupted, timeout_s=30), None)
    assert gone(children[0].pid)


def test_on_failure_runs_before_the_kill_and_a_passing_entry_keeps_its_children() -> None:
    calls: list[str] = []
    children: list[Any] = []

    def starts_a_server(ctx: object) -> dict:
        children.append(subprocess.Popen(SLEEPER))  # e.g. a cluster later entries share
        return {}

    try:
        result = run_entry(entry(starts_a_server), None, on_failure=lambda: calls.append("cleaned"))
        assert result["met"] is True and "error" not in result and calls == []
        assert children[0].poll() is None
    finally:
        children[0].kill()
        children[0].wait()

    def fails(ctx: object) -> dict:
        raise ValueError("bad")

    result = run_entry(entry(fails), None, on_failure=lambda: calls.append("cleaned"))
    assert calls == ["cleaned"] and result["error"] == "ValueError: bad" and result["stage"] == "start"


# ---------------------------------------------------------------- the plain-DDP baseline


@pytest.mark.parametrize("fail, message", [
    ("sigint", "rank 1 exited with code 0 before it finished"),  # torch's spawn._wrap: SIGINT -> exit 0
    ("raise", "rank 1 (pid "),
])
def test_plain_ddp_with_a_rank_that_exits_early_fails_fast(bench_script: Any, digits: Any, tmp_path: Path,
                                                           fail: str, message: str) -> None:
    def dp(ctx: object) -> dict:
        stage("plain DDP baseline")
        return bench_script.plain_ddp(digits[0], 1, tmp_path, fail=fail, fail_rank=1, timeout_s=120)

    started = time.monotonic()
    result = run_entry(entry(dp, "dp"), None, timeout_s=150)
    # Fast = without waiting for plain_ddp's 120 s deadline (it took 67 s once beside other
    # test runs on 2 cores, 60 s being the old bound; the ranks' imports take most of it).
    assert time.monotonic() - started < 110
    assert result["met"] is False and result["timed_out"] is False and result["stage"] == "plain DDP baseline"
    assert result["error"].startswith(f"RuntimeError: plain DDP: {message}"), result["error"]
    assert f"rank 1 at \"planted failure '{fail}'\"" in result["error"] and "\n" not in result["error"]
    assert "killed" not in result  # plain_ddp killed its own ranks


def test_plain_ddp_past_its_deadline_kills_the_ranks(bench_script: Any, digits: Any, tmp_path: Path) -> None:
    before = bench_lib.descendants()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"plain DDP: rank\(s\) \[0, 1\] still running 4 s after the launch"):
        bench_script.plain_ddp(digits[0], 1, tmp_path, fail="hang", fail_rank=1, timeout_s=4)
    assert time.monotonic() - started < 20
    left = [key for key in bench_lib.descendants() if key not in before and not bench_lib._is_resource_tracker(key[0])]
    assert left == []


def test_plain_ddp_measures(bench_script: Any, digits: Any, tmp_path: Path) -> None:
    result = bench_script.plain_ddp(digits[0], 2, tmp_path, timeout_s=120)
    assert result["setup_s"] > 0 and len(result["epoch_s"]) == 2

