"""Benchmark entries for the bench-limit tests (unit and fault tiers).

`ENTRIES` holds entries that an entry's own process (benchmarks.child) can import by
name: `CHILD` runs them with `context` (the run's arguments as they are).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.core import Child, Entry, Registry, stage

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def entry(run: Callable[[Any], dict], name: str = "e", timeout_s: float | None = None) -> Entry:
    return Entry(name, run, lambda r: ["table"], "anything", lambda r: True, timeout_s)


def names(stages: list[dict]) -> list[str]:
    """The stages' names, without a leading "start" (kept when the entry took over 50 ms,
    as on a busy machine, to name its first stage)."""
    out = [s["stage"] for s in stages]
    return out[1:] if out[:1] == ["start"] else out


def context(args: argparse.Namespace) -> argparse.Namespace:
    return args


def pid_file(ctx: argparse.Namespace, what: str, pid: int) -> None:
    """Tell the test a process's pid: a line "what pid" in ctx.pids."""
    with open(ctx.pids, "a") as f:
        f.write(f"{what} {pid}\n")


ENTRIES = Registry()
CHILD = Child("tests.support.bench_entries:ENTRIES", "tests.support.bench_entries:context")


def child(**args: Any) -> Child:
    return Child(CHILD.registry, CHILD.context, args)


@ENTRIES.register("hangs", target="anything", table=lambda r: [], met=lambda r: True, timeout_s=1.5)
def hangs(ctx: Any) -> dict:
    stage("plain DDP baseline")
    time.sleep(60)
    return {}


@ENTRIES.register("raises", target="anything", table=lambda r: [], met=lambda r: True)
def raises(ctx: Any) -> dict:
    with stage("plain DDP baseline"):
        pass
    with stage("raysweep dp"):
        raise RuntimeError("rank 1 gone\nsecond line of detail")


@ENTRIES.register("fine", target="ratio <= 1.05", table=lambda r: [f"ratio {r['ratio']}"],
                  met=lambda r: r["ratio"] <= 1.05)
def fine(ctx: Any) -> dict:
    stage("measure")
    return {"ratio": getattr(ctx, "ratio", 1.0)}


@ENTRIES.register("tiny", target="only at full size", table=lambda r: [], met=lambda r: None)
def tiny(ctx: Any) -> dict:
    return {}


@ENTRIES.register("deaf", target="anything", table=lambda r: [], met=lambda r: True, timeout_s=1.5)
def deaf(ctx: Any) -> dict:
    """Blocks every signal it can and waits on a child: only SIGKILL ends it."""
    stage("set-up")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGUSR1})
    stage("deaf wait")
    proc = subprocess.Popen(SLEEPER)
    pid_file(ctx, "child", proc.pid)
    proc.wait()
    return {"finished": True}


@ENTRIES.register("spawner", target="anything", table=lambda r: [], met=lambda r: True, timeout_s=2.0)
def spawner(ctx: Any) -> dict:
    """Leaves a child in its process group and one in a session of its own, then sleeps."""
    stage("start helpers")
    grouped = subprocess.Popen(SLEEPER)
    alone = subprocess.Popen(SLEEPER, start_new_session=True)
    pid_file(ctx, "grouped", grouped.pid)
    pid_file(ctx, "alone", alone.pid)
    pid_file(ctx, "entry", os.getpid())
    stage("waiting")
    time.sleep(120)
    return {}


@ENTRIES.register("leaves", target="anything", table=lambda r: [], met=lambda r: True)
def leaves(ctx: Any) -> dict:
    """Returns a result and leaves a process running."""
    pid_file(ctx, "grouped", subprocess.Popen(SLEEPER).pid)
    return {"done": True}


@ENTRIES.register("crashes", target="anything", table=lambda r: [], met=lambda r: True)
def crashes(ctx: Any) -> dict:
    stage("about to die")
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


@ENTRIES.register("scratch", target="anything", table=lambda r: [], met=lambda r: True)
def scratch(ctx: Any) -> dict:
    """Writes a temporary folder and reports it (the parent removes it)."""
    import tempfile

    path = tempfile.mkdtemp(prefix="left-")
    Path(path, "file").write_text("x")
    return {"path": path}
