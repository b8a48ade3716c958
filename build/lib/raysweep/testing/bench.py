"""A benchmark registry shared by `scripts/bench.py` and `scripts/gpu_check.py`.

Each benchmark is an `Entry`: how to run it, how to draw its result as Markdown,
its target in words and a test of that target. `run_entries` runs the chosen
entries, writes `target` and `met` into each entry's JSON result, writes the JSON
(and the Markdown beside it), prints the tables and the targets missed, and says
whether none was missed.

Imports only the standard library: the GPU machine has torch, numpy and pyarrow,
and no Ray, MLflow, Optuna or pydantic.

    ENTRIES = Registry()

    @ENTRIES.register("step", target="ratio <= 1.05", table=step_table,
                      met=lambda r: r["ratio"] <= 1.05)
    def bench_step(ctx) -> dict: ...

    ok = run_entries(ENTRIES, ["step"], ctx, out=Path("bench.json"))

Time limits and stages. Every entry runs under a time limit (`DEFAULT_TIMEOUT_S`,
the run's `timeout_s`, the entry's own `register(..., timeout_s=...)`, or the run's
per-name `timeouts`, in rising precedence). An entry says where it is with
`stage(name)` (a call: from here on; or `with stage(name):` for a block); the result
records the stages with their seconds. An entry past its limit, or one that raises,
is a failed entry (`met: false`, `error`, `timed_out`, `stage`), every process it
started and left running is killed, and the next entry runs. How a blocked entry is
interrupted: `Watchdog`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from raysweep.errors import one_line_cause

Result = dict[str, Any]

DEFAULT_TIMEOUT_S = 1800.0  # per entry; the slowest measured entry (overhead) takes about 200 s on 2 CPUs
RETRY_S = 10.0  # past the limit, the watchdog raises again this often (until the entry has unwound)
KILL_GRACE_S = 10.0  # past the limit, a helper thread kills the entry's new processes after this long
CLEANUP_TIMEOUT_S = 60.0  # a failed entry's clean-up (the context's on_failure) gets this long
FIRST_STAGE = "start"  # an entry's stage until it names one


@dataclass(frozen=True)
class Entry:
    """One benchmark.

    Attributes:
        name: what `--only` names it by.
        run: called with the script's context; returns a JSON-able dict.
        table: the result as Markdown lines (tables and notes).
        target: the target, in words.
        met: whether the result meets the target; None when it cannot tell
            (e.g. sizes too small to measure).
        timeout_s: the entry's own time limit in seconds (None: the run's default;
            0: none).
    """

    name: str
    run: Callable[[Any], Result]
    table: Callable[[Result], list[str]]
    target: str
    met: Callable[[Result], bool | None]
    timeout_s: float | None = None


class Registry(Mapping[str, Entry]):
    """Entries by name, in the order they were registered."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: Entry) -> Entry:
        if entry.name in self._entries:
            raise ValueError(f"benchmark entry {entry.name!r} is registered twice")
        self._entries[entry.name] = entry
        return entry

    def register(self, name: str, *, target: str, table: Callable[[Result], list[str]],
                 met: Callable[[Result], bool | None], timeout_s: float | None = None,
                 ) -> Callable[[Callable[[Any], Result]], Callable[[Any], Result]]:
        """Decorator: register the decorated function as the entry's `run` (with its
        own time limit `timeout_s`, when given)."""

        def decorate(run: Callable[[Any], Result]) -> Callable[[Any], Result]:
            self.add(Entry(name, run, table, target, met, timeout_s))
            return run

        return decorate

    def unknown(self, names: Iterable[str]) -> list[str]:
        return sorted(set(names) - set(self._entries))


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table (floats to 3 significant digits), then a blank line."""

    def cell(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(cell(v) for v in row) + " |" for row in rows], ""]


def verdict(met: bool | None) -> str:
    return "yes" if met is True else "NO" if met is False else "not decided"


# ---------------------------------------------------------------- stages


class StageLog:
    """The stages one entry went through: (name, seconds since the entry started), in order."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.events: list[tuple[str, float, bool]] = [(FIRST_STAGE, 0.0, True)]  # (name, at, resumed)

    @property
    def current(self) -> str:
        return self.events[-1][0]

    def enter(self, name: str, resumed: bool = False) -> None:
        self.events.append((name, time.perf_counter() - self.started, resumed))

    def timeline(self) -> list[dict[str, Any]]:
        """[{"stage", "s"}] in order. Left out: the first stage and a stage resumed after a
        `with stage(...)` block when the entry named another within 50 ms; a stage named
        twice in a row counts once."""
        now = time.perf_counter() - self.started
        kept = [(name, at) for i, (name, at, resumed) in enumerate(self.events)
                if not (resumed and i + 1 < len(self.events) and self.events[i + 1][1] - at < 0.05)]
        merged: list[tuple[str, float]] = []
        for name, at in kept:
            if not merged or merged[-1][0] != name:
                merged.append((name, at))
        return [{"stage": name, "s": round((merged[i + 1][1] if i + 1 < len(merged) else now) - at, 2)}
                for i, (name, at) in enumerate(merged)]


_running: StageLog | None = None  # the entry run_entry is running now


class Stage:
    """What `stage` returns: the stage is entered on creation; used as a context
    manager, the stage before it resumes when the block ends without an exception
    (when one escapes, the entry's failure names this stage)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._log = _running
        self._previous = self._log.current if self._log is not None else None
        if self._log is not None:
            self._log.enter(name)

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None and self._log is not None and self._log is _running and self._previous is not None:
            self._log.enter(self._previous, resumed=True)


def stage(name: str) -> Stage:
    """Say which stage the running entry is in: `stage("plain DDP baseline")` (from here
    on), or `with stage("raysweep dp"): ...` (for the block). Outside an entry: no-op.
    A timed-out or failed entry is reported with the stage it was in; each side of an
    A/B pair should be its own stage."""
    return Stage(name)


def current_stage() -> str | None:
    return _running.current if _running is not None else None


# ---------------------------------------------------------------- processes


def _processes() -> dict[int, tuple[int, str, str, str]]:
    """pid: (parent pid, start time, state, name) of every process in /proc (empty where there is none)."""
    found: dict[int, tuple[int, str, str, str]] = {}
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue  # gone since the listing
        # "pid (name) state ppid ... starttime(22nd) ...": the name may hold spaces and parentheses
        name, fields = stat[stat.find("(") + 1:stat.rfind(")")], stat[stat.rfind(")") + 2:].split()
        if len(fields) > 19:
            found[pid] = (int(fields[1]), fields[19], fields[0], name)
    return found


Snapshot = dict[tuple[int, str], str]  # (pid, start time) -> name; the start time tells a reused pid apart


def descendants(root: int | None = None) -> Snapshot:
    """This process's descendants (children, their children, ...), zombies left out.
    A process whose parent died is re-parented away and no longer counts."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found: Snapshot = {}
    todo = [os.getpid() if root is None else root]
    while todo:
        for child in children.get(todo.pop(), []):
            _, started, state, name = procs[child]
            if state != "Z":
                found[(child, started)] = name
            todo.append(child)
    return found


def _is_resource_tracker(pid: int) -> bool:
    """multiprocessing's resource tracker: shared by every later multiprocessing user
    in this process (it is restarted when killed, with a warning): left alone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"multiprocessing.resource_tracker" in f.read()
    except OSError:
        return False


def kill_new(before: Snapshot) -> list[str]:
    """SIGKILL every descendant of this process that the snapshot `before` (`descendants()`)
    does not hold; "pid name" of each one killed."""
    killed = []
    for key, name in descendants().items():
        pid = key[0]
        if key in before or _is_resource_tracker(pid):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        killed.append(f"{pid} {name}")
    return killed


# ---------------------------------------------------------------- the watchdog


class EntryTimeout(KeyboardInterrupt):
    """Raised in the main thread when an entry passes its time limit.

    A KeyboardInterrupt, so that (1) an entry's `except Exception` does not swallow
    it, and (2) C code that polls for signals and passes only a KeyboardInterrupt on
    turns it into its own interruption: Ray's `ray.get` (the core worker's
    check_signals) raises a KeyboardInterrupt of its own then. Checked on Ray 2.60:
    `ray.get` of a 120 s task under a 3 s limit ends at 3.0 s with KeyboardInterrupt;
    a handler raising any other exception type is held until the task ends (117 s)
    and then surfaces as a SystemError. `run_entry` tells a timeout from a user's
    Ctrl-C by whether the watchdog fired, not by the type."""


class Watchdog:
    """A time limit on the block it guards, which must run in the main thread.

    Why a signal: an entry blocks in C code or in a join on a child process (Ray's
    `ray.get`, `torch.multiprocessing` joins, `subprocess` waits, lock and thread
    joins). Only the main thread can be interrupted there, and only by a signal: its
    Python handler runs when the blocking call returns EINTR (Python retries the
    call after running handlers, PEP 475, so a handler that raises ends it) or when
    the C code polls for signals (Ray does). So at the limit, SIGALRM
    (`setitimer(ITIMER_REAL)`) raises `EntryTimeout` in the main thread, and again
    every `RETRY_S` until the block has unwound, in case the code it interrupted
    swallowed one.

    Why a helper thread too: C code that waits without polling for signals (e.g.
    Arrow waiting on a stuck S3 server, gloo waiting on a rank) keeps the main thread
    from ever running the handler. What it waits on is almost always a process the
    entry started; so `KILL_GRACE_S` after the limit, a daemon thread calls `kill`
    (run_entry: SIGKILL to every process the entry started and left running), which
    ends the wait, and then the handler's exception gets through. Children of torch's
    spawn share this process's process group and Ray's node processes put themselves
    in none of their own, so the processes are found by parentage (/proc), not by
    process group.

    Outside the main thread (no signal can reach it) only the thread's kill works.
    The previous SIGALRM handler and timer are restored on exit.
    """

    def __init__(self, limit_s: float | None, kill: Callable[[], list[str]] | None = None,
                 what: str = "entry") -> None:
        self.limit_s = limit_s if limit_s and limit_s > 0 else None
        self.kill, self.what = kill, what
        self.fired = 0
        self.stage: str | None = None  # the stage when the limit passed
        self.killed: list[str] = []  # what the helper thread killed
        self._armed = False
        self._signal = False
        self._done = threading.Event()
        self._old_handler: Any = None
        self._old_timer = (0.0, 0.0)
        self._entered = 0.0

    @property
    def expired(self) -> bool:
        return self.fired > 0

    def __enter__(self) -> Watchdog:
        if self.limit_s is None:
            return self
        self._armed, self._entered = True, time.monotonic()
        if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
            self._signal = True
            self._old_handler = signal.signal(signal.SIGALRM, self._fire)
            self._old_timer = signal.setitimer(signal.ITIMER_REAL, self.limit_s, RETRY_S)
        threading.Thread(target=self._last_resort, name=f"watchdog: {self.what}", daemon=True).start()
        return self

    def _expire(self) -> None:
        if self.fired == 0:
            self.stage = current_stage()
        self.fired += 1

    def _fire(self, signum: int, frame: FrameType | None) -> None:
        if not self._armed:
            return
        self._expire()
        raise EntryTimeout(f"{self.what} timed out after {self.limit_s:g} s in stage {self.stage!r}")

    def _last_resort(self) -> None:
        assert self.limit_s is not None
        if self._done.wait(self.limit_s + KILL_GRACE_S) or not self._armed:
            return
        if not self._signal:
            self._expire()
        if self.kill is not None:
            self.killed += self.kill()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._armed:
            return
        self._armed = False
        self._done.set()
        if self._signal:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old_handler if self._old_handler is not None else signal.SIG_DFL)
            delay, interval = self._old_timer
            if delay > 0:  # someone else's timer was running: give it what is left of it
                signal.setitimer(signal.ITIMER_REAL, max(delay - (time.monotonic() - self._entered), 1e-3), interval)


# ---------------------------------------------------------------- running entries


def time_limit(entry: Entry, default: float | None = None, override: float | None = None) -> float | None:
    """An entry's limit in seconds (None: none): `override` (a per-name limit of the run)
    beats the entry's own, which beats `default` (the run's), which beats DEFAULT_TIMEOUT_S;
    0 or less: no limit."""
    for value in (override, entry.timeout_s, default, DEFAULT_TIMEOUT_S):
        if value is not None:
            return float(value) if value > 0 else None
    return None


def parse_time_limits(values: Iterable[str], known: Iterable[str] = ()) -> tuple[float | None, dict[str, float]]:
    """Command-line limits: "SECONDS" (the run's default) and "NAME=SECONDS" (one
    entry's) -> (default, {name: seconds}). ValueError on a bad one."""
    default: float | None = None
    named: dict[str, float] = {}
    known = set(known)
    for value in values:
        name, _, seconds = value.rpartition("=")
        try:
            number = float(seconds)
        except ValueError:
            raise ValueError(f"time limit {value!r}: want SECONDS or NAME=SECONDS") from None
        if not name:
            default = number
        elif known and name not in known:
            raise ValueError(f"time limit {value!r}: no entry named {name!r}; known: {', '.join(sorted(known))}")
        else:
            named[name] = number
    return default, named


def one_line(exc: BaseException) -> str:
    """`Type: message` in one line: the message's first line, or, for a message that
    holds a traceback or a Ray worker failure (torch's ProcessRaisedException, Ray's
    errors), its root cause (raysweep.errors.one_line_cause)."""
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and any(mark in text for mark in ("Traceback (most recent call last)", "Error Snippet]",
                                                        "Worker exit detail:")):
        text = one_line_cause(text)
    elif lines:
        text = lines[0].strip()
    text = text if len(text) <= 500 else text[:497] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _clean_up(on_failure: Callable[[], object] | None, before: Snapshot) -> dict[str, Any]:
    """After a failed entry: the context's clean-up (bounded), then SIGKILL to every
    process the entry started that is still running."""
    notes: dict[str, Any] = {}
    if on_failure is not None:
        dog = Watchdog(CLEANUP_TIMEOUT_S, what="clean-up")
        try:
            with dog:
                on_failure()
        except Exception as exc:
            notes["cleanup_error"] = one_line(exc)
        except KeyboardInterrupt:
            if not dog.expired:
                raise
            notes["cleanup_error"] = f"clean-up timed out after {CLEANUP_TIMEOUT_S:g} s"
    killed = kill_new(before)
    if killed:
        notes["killed"] = killed
    return notes


def run_entry(entry: Entry, context: Any, *, timeout_s: float | None = None,
              on_failure: Callable[[], object] | None = None) -> Result:
    """Run one entry under its time limit; its result with `entry`, `target`, `met`,
    `bench_wall_s`, `time_limit_s` and `stages`.

    `timeout_s` is the limit (None: `time_limit(entry)`; 0: none). An entry that
    raises, or passes its limit, counts as missed: its result holds `error` (one
    line), `timed_out` and `stage` (the stage it failed in; the traceback goes to
    stderr). Then `on_failure` runs (e.g. stop a cluster the entry used) and every
    process the entry started and left running is killed, so the other entries
    still run. A KeyboardInterrupt that is not the watchdog's (Ctrl-C) stops the run,
    after that same clean-up.
    """
    global _running
    limit = time_limit(entry) if timeout_s is None else (timeout_s if timeout_s > 0 else None)
    before = descendants()
    log = StageLog()
    outer, _running = _running, log
    watchdog = Watchdog(limit, kill=lambda: kill_new(before), what=f"entry {entry.name!r}")
    failure: dict[str, Any] | None = None
    result: Result = {}
    met: bool | None = False
    try:
        with watchdog:
            result = dict(entry.run(context))
        result.setdefault("entry", entry.name)
        met = entry.met(result)
    except BaseException as exc:
        if watchdog.expired:  # EntryTimeout, or what the interrupted code made of it
            pass
        elif isinstance(exc, Exception):
            traceback.print_exc()
            failure = {"error": one_line(exc), "timed_out": False, "stage": log.current}
        else:  # Ctrl-C, SystemExit: stop the run, leaving nothing running
            _running = outer
            _clean_up(on_failure, before)
            raise
    finally:
        _running = outer
    if watchdog.expired:  # also when the entry went on and returned after all
        failure = {"error": f"timed out after {limit:g} s in stage {watchdog.stage!r}", "timed_out": True,
                   "stage": watchdog.stage}
        if watchdog.killed:
            failure["killed_at_limit"] = watchdog.killed
    if failure is not None:
        print(f"{entry.name}: FAILED: {failure['error']}" + ("" if failure["timed_out"] else
                                                              f" (in stage {failure['stage']!r})"),
              file=sys.stderr, flush=True)
        result, met = {"entry": entry.name, **failure, **_clean_up(on_failure, before)}, False
    if met is not None and not isinstance(met, bool):
        met = bool(met)  # numpy bools and the like: keep the JSON plain
    result["target"], result["met"] = entry.target, met
    result["time_limit_s"] = limit
    result["stages"] = log.timeline()
    result["bench_wall_s"] = round(time.perf_counter() - log.started, 1)
    return result


def failure_text(r: Result) -> str:
    """A failed entry's one line: its error, and the stage it failed in."""
    if r.get("timed_out"):
        return r["error"]
    return f"{r['error']} (in stage {r['stage']!r})" if r.get("stage") else r["error"]


def markdown(registry: Mapping[str, Entry], results: list[Result], header: Sequence[str] = ()) -> str:
    lines = [*header, ""] if header else []
    for r in results:
        entry = registry[r["entry"]]
        baseline = f"baseline: {r['baseline']}; " if r.get("baseline") else ""
        lines += [f"**{entry.name}** ({baseline}target: {entry.target}; met: {verdict(r['met'])})", ""]
        if "error" in r:
            lines += [f"Failed: {failure_text(r)}", ""]
        else:
            lines += entry.table(r)
        if r.get("note"):
            lines += ["", f"({r['note']})", ""]
    return "\n".join(lines)


def summary(results: list[Result]) -> dict[str, list[str]]:
    return {"missed": [r["entry"] for r in results if r["met"] is False],
            "not_decided": [r["entry"] for r in results if r["met"] is None],
            "failed": [r["entry"] for r in results if "error" in r],
            "timed_out": [r["entry"] for r in results if r.get("timed_out")]}


def run_entries(registry: Mapping[str, Entry], names: Iterable[str], context: Any, *, out: Path | str | None = None,
                header: Sequence[str] = (), meta: Mapping[str, Any] | None = None, echo: bool = True,
                timeout_s: float | None = None, timeouts: Mapping[str, float] | None = None,
                on_failure: Callable[[], object] | None = None) -> bool:
    """Run `names` in order; True when no entry missed its target (an entry that
    cannot tell, `met` None, misses nothing; a failed or timed-out entry misses).

    Limits: `timeouts[name]`, else the entry's own, else `timeout_s`, else
    DEFAULT_TIMEOUT_S (`time_limit`). `on_failure` runs after an entry failed (see
    `run_entry`). With `out`, the JSON ({**meta, "results": [...], "missed",
    "not_decided", "failed", "timed_out"}) is rewritten after every entry, and the
    Markdown goes to `out` with suffix .md.
    """
    names = list(names)
    unknown = sorted(set(names) - set(registry))
    if unknown:
        raise ValueError(f"unknown benchmark entries {unknown}; known: {', '.join(registry)}")
    results: list[Result] = []
    for name in names:
        entry = registry[name]
        limit = time_limit(entry, timeout_s, (timeouts or {}).get(name))
        results.append(run_entry(entry, context, timeout_s=limit or 0, on_failure=on_failure))
        r = results[-1]
        if echo:
            done = f"FAILED in {r['bench_wall_s']} s: {failure_text(r)}" if "error" in r else \
                f"done in {r['bench_wall_s']} s"
            print(f"{name}: {done}; target met: {verdict(r['met'])}", flush=True)
        if out is not None:
            Path(out).write_text(json.dumps({**(meta or {}), "results": results, **summary(results)}, indent=2))
    text = markdown(registry, results, header)
    if out is not None:
        Path(out).with_suffix(".md").write_text(text + "\n")
    outcome = summary(results)
    if echo:
        print(text)
        for name in outcome["not_decided"]:
            print(f"target not decided: {name} ({registry[name].target})")
        for name in outcome["missed"]:
            print(f"target missed: {name} ({registry[name].target})")
        if not outcome["missed"]:
            print("no target missed" if results else "no entry run")
    return not outcome["missed"]
