"""The benchmark runner shared by `scripts/bench.py` and `scripts/gpu_check.py`.

Each benchmark is an `Entry`: how to run it, how to draw its result as Markdown,
its target in words and a test of that target. `run_entries` runs the chosen
entries, each in a process of its own (`python -m benchmarks.child`), writes
`target` and `met` into each entry's JSON result, writes the JSON (and the Markdown
beside it), prints the tables and the targets missed, and says whether none was
missed.

Imports only the standard library: the GPU machine has torch, numpy and pyarrow,
and no Ray, MLflow, Optuna or pydantic.

    ENTRIES = Registry()

    @ENTRIES.register("step", target="ratio <= 1.05", table=step_table,
                      met=lambda r: r["ratio"]["median"] <= 1.05)
    def bench_step(ctx) -> dict: ...

    ok = run_entries(ENTRIES, ["step"], Child("benchmarks.entries:ENTRIES",
                     "benchmarks.common:make_bench", vars(args)), out=Path("bench.json"))

Processes and time limits. Every entry runs in a child process, a session (and
process group) of its own, under a wall-clock limit (`DEFAULT_TIMEOUT_S`, the run's
`timeout_s`, the entry's own `register(..., timeout_s=...)`, or the run's per-name
`timeouts`, in rising precedence) that this process enforces: past it, the child's
process tree (found by parentage in /proc) and its process group get SIGKILL. No
signal handler, alarm or thread runs in the entry's process. The child imports the
registry and the entry's module, builds the context (`Child.context`, called with
the run's arguments), and writes its result to a file; its scratch files go to a
folder this process removes when the child ends, killed or not.

Stages. An entry says where it is with `stage(name)` (a call: from here on; or `with
stage(name):` for a block); the child appends each stage to a file this process
reads, so a killed entry is still reported with the stage it was in, and a finished
one records its stages with their seconds. An entry past its limit, one that raises
or one whose process dies is a failed entry (`met: false`, `error`, `timed_out`,
`stage`), and the next entry runs.

Interleaved pairs (`interleave`, `paired`). An entry that compares raysweep with a
baseline side by side runs them alternately, `pairs` times (the order flips every
pair), takes the ratio within each pair, and records the median ratio and its
spread (min, max, quartiles); its target is decided on the median, and only with
at least `MIN_PAIRS` pairs (fewer: `met` None, a smoke run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

Result = dict[str, Any]

DEFAULT_TIMEOUT_S = 1800.0  # per entry; the slowest measured entry (overhead) takes about 200 s on 2 CPUs
CLEANUP_TIMEOUT_S = 60.0  # (kept for callers) a failed entry's clean-up in its own process
FIRST_STAGE = "start"  # an entry's stage until it names one
MIN_PAIRS = 5  # interleaved pairs a recorded figure needs; fewer decide nothing


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
        method: how it measures, when not in interleaved pairs (shown under its table).
        module: the module that defines `run`, which the entry's process imports
            (default: `run.__module__`; "__main__" when a script defines it: the
            child imports the registry's script instead).
    """

    name: str
    run: Callable[[Any], Result]
    table: Callable[[Result], list[str]]
    target: str
    met: Callable[[Result], bool | None]
    timeout_s: float | None = None
    module: str = ""
    method: str = ""

    def __post_init__(self) -> None:
        if not self.module:
            object.__setattr__(self, "module", getattr(self.run, "__module__", "") or "__main__")


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
                 met: Callable[[Result], bool | None], timeout_s: float | None = None, method: str = "",
                 ) -> Callable[[Callable[[Any], Result]], Callable[[Any], Result]]:
        """Decorator: register the decorated function as the entry's `run` (with its
        own time limit `timeout_s`, when given)."""

        def decorate(run: Callable[[Any], Result]) -> Callable[[Any], Result]:
            self.add(Entry(name, run, table, target, met, timeout_s, method=method))
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
    """The stages one entry went through: (name, seconds since the entry started), in
    order; each also appended as a JSON line to `path` (when given) for the parent."""

    def __init__(self, path: str | None = None) -> None:
        self.started = time.perf_counter()
        self.path = path
        self.events: list[tuple[str, float, bool]] = []  # (name, at, resumed)
        self.enter(FIRST_STAGE)

    @property
    def current(self) -> str:
        return self.events[-1][0]

    def enter(self, name: str, resumed: bool = False) -> None:
        at = time.perf_counter() - self.started if self.events else 0.0
        self.events.append((name, at, resumed))
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps({"stage": name, "at": round(at, 3)}) + "\n")

    def timeline(self) -> list[dict[str, Any]]:
        """[{"stage", "s"}] in order. Left out: the first stage and a stage resumed after a
        `with stage(...)` block when the entry named another within 50 ms; a stage named
        twice in a row counts once."""
        now = time.perf_counter() - self.started
        return _timeline([(name, at, resumed) for name, at, resumed in self.events], now)


def _timeline(events: Sequence[tuple[str, float, bool]], now: float) -> list[dict[str, Any]]:
    kept = [(name, at) for i, (name, at, resumed) in enumerate(events)
            if not (resumed and i + 1 < len(events) and events[i + 1][1] - at < 0.05)]
    merged: list[tuple[str, float]] = []
    for name, at in kept:
        if not merged or merged[-1][0] != name:
            merged.append((name, at))
    return [{"stage": name, "s": round((merged[i + 1][1] if i + 1 < len(merged) else now) - at, 2)}
            for i, (name, at) in enumerate(merged)]


def read_stage_file(path: Path | str, now: float | None = None) -> tuple[str | None, list[dict[str, Any]]]:
    """(the last stage, the timeline) from a child's stage file; (None, []) when it wrote none.
    `now`: seconds since the entry started (the last stage's end), else its own start."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None, []
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by the kill
        events.append((str(event["stage"]), float(event["at"]), False))
    if not events:
        return None, []
    return events[-1][0], _timeline(events, events[-1][1] if now is None else now)


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
    A/B pair should be its own stage (`interleave` names them)."""
    return Stage(name)


def current_stage() -> str | None:
    return _running.current if _running is not None else None


# ---------------------------------------------------------------- interleaved pairs


def interleave(pairs: int, sides: Mapping[str, Callable[[int], float]]) -> dict[str, list[float]]:
    """Run every side once per pair, `pairs` times, and return each side's measures in
    pair order. Pair i runs the sides in order when i is even, reversed when odd (so no
    side always runs first, on a warmer or a colder machine); each run is a stage named
    by its side. `sides[name](i)` measures once (e.g. seconds) for pair i."""
    if pairs < 1:
        raise ValueError(f"pairs={pairs}: at least 1")
    names = list(sides)
    measures: dict[str, list[float]] = {name: [] for name in names}
    for i in range(pairs):
        for name in (names if i % 2 == 0 else names[::-1]):
            with stage(f"{name} (pair {i + 1} of {pairs})"):
                measures[name].append(float(sides[name](i)))
    return measures


def spread(ratios: Sequence[float]) -> dict[str, Any]:
    """The median of per-pair ratios and their spread: {"median", "min", "max", "q1",
    "q3" (quartiles, inclusive method), "pairs", "ratios" (in pair order)}."""
    values = [float(r) for r in ratios]
    if not values:
        raise ValueError("no ratios")
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q1, "q3": q3,
            "pairs": len(values), "ratios": [round(v, 4) for v in values]}


def paired(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """`spread` of numerators[i] / denominators[i]: the two sides' measures of one pair each."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} against {len(denominators)} measures: not pairs")
    return spread([n / d for n, d in zip(numerators, denominators, strict=True)])


def on_median(s: Mapping[str, Any], test: Callable[[float], bool]) -> bool | None:
    """A target decided on a spread's median; None (not decided) with under MIN_PAIRS pairs."""
    if s["pairs"] < MIN_PAIRS:
        return None
    return bool(test(s["median"]))


def spread_text(s: Mapping[str, Any] | float, digits: int = 3) -> str:
    """"1.03 (0.98-1.10; IQR 1.00-1.05; 5 pairs)": the median, its range and quartiles (a
    plain number, as results recorded before pairs hold: that number)."""
    def g(v: float) -> str:
        return f"{v:.{digits}g}"

    if not isinstance(s, Mapping):
        return g(float(s))
    return f"{g(s['median'])} ({g(s['min'])}-{g(s['max'])}; IQR {g(s['q1'])}-{g(s['q3'])}; {s['pairs']} pairs)"


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
        from raysweep.errors import one_line_cause  # (stdlib-only itself)

        text = one_line_cause(text)
    elif lines:
        text = lines[0].strip()
    text = text if len(text) <= 500 else text[:497] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_entry(entry: Entry, context: Any, *, on_failure: Callable[[], object] | None = None,
              stage_file: str | None = None) -> Result:
    """Run one entry here, in this process, with no time limit (the child process's
    part, `benchmarks.child`); its result with `entry`, `target`, `met`,
    `bench_wall_s` and `stages`.

    An entry that raises counts as missed: its result holds `error` (one line),
    `timed_out` (False) and `stage` (the stage it failed in; the traceback goes to
    stderr); then `on_failure` runs (e.g. stop a Ray cluster). A KeyboardInterrupt or
    SystemExit runs `on_failure` and goes on up.
    """
    global _running
    log = StageLog(stage_file)
    outer, _running = _running, log
    result: Result = {}
    met: bool | None = False
    try:
        result = dict(entry.run(context))
        result.setdefault("entry", entry.name)
        met = entry.met(result)
    except Exception as exc:
        traceback.print_exc()
        failure = {"error": one_line(exc), "timed_out": False, "stage": log.current}
        print(f"{entry.name}: FAILED: {failure['error']} (in stage {failure['stage']!r})", file=sys.stderr,
              flush=True)
        if on_failure is not None:
            try:
                on_failure()
            except Exception as cleanup:
                failure["cleanup_error"] = one_line(cleanup)
        result, met = {"entry": entry.name, **failure}, False
    except BaseException:
        if on_failure is not None:
            on_failure()
        raise
    finally:
        _running = outer
    if met is not None and not isinstance(met, bool):
        met = bool(met)  # numpy bools and the like: keep the JSON plain
    result["target"], result["met"] = entry.target, met
    result["stages"] = log.timeline()
    result["bench_wall_s"] = round(time.perf_counter() - log.started, 1)
    return result


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
    """The descendants of `root` (default: this process), zombies left out. A process
    whose parent died is re-parented away and no longer counts."""
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


def kill_tree(pid: int) -> list[str]:
    """SIGKILL the process `pid` (a session leader: `start_new_session`), its process
    group, and every descendant (also those that left the group, e.g. by setsid);
    "pid name" of each descendant killed. The tree is listed before the kill, while
    the descendants are still the child's (killed, they would be re-parented away)."""
    tree = descendants(pid)
    killed = []
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass
    procs = _processes()
    for (child, started), name in tree.items():
        if child in procs and procs[child][1] != started:
            continue  # the pid was reused
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            continue
        killed.append(f"{child} {name}")
    return killed


@dataclass(frozen=True)
class Child:
    """How an entry's process finds the entry and builds its context.

    Attributes:
        registry: "module:NAME" or "path/script.py:NAME", the `Registry` holding the
            entries (a script is imported by its file name, from its folder).
        context: "module:function" or "path/script.py:function": called in the child
            with the run's arguments (an argparse.Namespace of `args`) to make what
            every entry's `run` gets; an `after_failure()` method of it, when there is
            one, runs after an entry raised.
        args: the run's arguments, JSON-able.
    """

    registry: str
    context: str
    args: Mapping[str, Any] = field(default_factory=dict)


def _child_env() -> dict[str, str]:
    """This environment, with the folder holding `benchmarks` first on PYTHONPATH."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    return env


def run_isolated(entry: Entry, child: Child, *, timeout_s: float | None = None) -> Result:
    """Run one entry in a child process (`python -m benchmarks.child`) under a wall-clock
    limit (None: `time_limit(entry)`; 0: none); its result, with `entry`, `target`,
    `met`, `bench_wall_s`, `time_limit_s` and `stages`.

    Past the limit the child's process tree and group are killed and the result is a
    failed one: `error` ("timed out after N s in stage 'S'"), `timed_out` True, the
    `stage` the child last reported, `killed_at_limit`. A child that dies without a
    result (a signal, os._exit) fails with its exit status and last stage. Processes
    the entry left running are killed when its process ends (`killed`, on a failure).
    A KeyboardInterrupt here (Ctrl-C) kills the child's tree and goes on up.
    """
    limit = time_limit(entry) if timeout_s is None else (timeout_s if timeout_s > 0 else None)
    # Short: Ray's session folder goes under the scratch folder (tempfile, raysweep.cluster.local), and a
    # Unix socket's path there must stay under 108 bytes.
    work = Path(tempfile.mkdtemp(prefix="b-"))
    scratch = work / "s"
    scratch.mkdir()
    job: dict[str, Any] = {
        "registry": child.registry, "context": child.context, "args": dict(child.args), "entry": entry.name,
        "module": entry.module, "stage_file": str(work / "stages.jsonl"), "result_file": str(work / "result.json"),
        "scratch": str(scratch), "sys_path": [p for p in sys.path if p]}
    (work / "job.json").write_text(json.dumps(job))
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.child", str(work / "job.json")],
                            start_new_session=True, env=_child_env())
    failure: dict[str, Any] | None = None
    try:
        try:
            proc.wait(timeout=limit)
            left = kill_tree(proc.pid)  # what it left running (its group, its setsid'd descendants)
        except subprocess.TimeoutExpired:
            killed = kill_tree(proc.pid)
            proc.wait()
            last, _ = read_stage_file(job["stage_file"])
            failure = {"error": f"timed out after {limit:g} s in stage {last!r}", "timed_out": True, "stage": last,
                       "killed_at_limit": killed}
            left = []
    except BaseException:  # Ctrl-C: leave nothing running
        kill_tree(proc.pid)
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
        raise
    wall = time.perf_counter() - started
    result: Result = {}
    if failure is None:
        try:
            result = json.loads(Path(job["result_file"]).read_text())
        except (OSError, ValueError):
            last, _ = read_stage_file(job["stage_file"])
            status = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
            failure = {"error": f"the entry's process ended ({status}) without a result", "timed_out": False,
                       "stage": last}
    _, stages = read_stage_file(job["stage_file"], now=wall)
    shutil.rmtree(work, ignore_errors=True)
    met: bool | None
    if failure is not None:
        print(f"{entry.name}: FAILED: {failure['error']}" + ("" if failure["timed_out"] else
                                                              f" (in stage {failure['stage']!r})"),
              file=sys.stderr, flush=True)
        result, met = {"entry": entry.name, **failure, "stages": stages}, False
        if left:
            result["killed"] = left
    elif "error" in result:
        met = False
        if left:
            result["killed"] = left
    else:
        try:
            met = entry.met(result)
        except Exception as exc:  # a result the test cannot read: a failed entry
            result.update(error=f"met: {one_line(exc)}", timed_out=False, stage=None)
            met = False
    if met is not None and not isinstance(met, bool):
        met = bool(met)
    result.setdefault("entry", entry.name)
    result["target"], result["met"] = entry.target, met
    result["time_limit_s"] = limit
    result.setdefault("stages", stages)
    result["bench_wall_s"] = round(wall, 1)
    # How busy the machine was (1-minute load average before and after; other work shares it).
    result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["cpus"] = os.cpu_count()
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
            if entry.method:
                lines += [f"Method: {entry.method}", ""]
        if r.get("load_avg_1m"):
            before, after = r["load_avg_1m"]
            lines += [f"Load average (1 min) before / after the entry: {before} / {after} on {r.get('cpus')} CPUs.", ""]
        if r.get("note"):
            lines += ["", f"({r['note']})", ""]
    return "\n".join(lines)


def summary(results: list[Result]) -> dict[str, list[str]]:
    return {"missed": [r["entry"] for r in results if r["met"] is False],
            "not_decided": [r["entry"] for r in results if r["met"] is None],
            "failed": [r["entry"] for r in results if "error" in r],
            "timed_out": [r["entry"] for r in results if r.get("timed_out")]}


def run_entries(registry: Mapping[str, Entry], names: Iterable[str], child: Child, *,
                out: Path | str | None = None, header: Sequence[str] = (), meta: Mapping[str, Any] | None = None,
                echo: bool = True, timeout_s: float | None = None,
                timeouts: Mapping[str, float] | None = None) -> bool:
    """Run `names` in order, each in its own process (`run_isolated`); True when no entry
    missed its target (an entry that cannot tell, `met` None, misses nothing; a failed
    or timed-out entry misses).

    Limits: `timeouts[name]`, else the entry's own, else `timeout_s`, else
    DEFAULT_TIMEOUT_S (`time_limit`). With `out`, the JSON ({**meta, "results": [...],
    "missed", "not_decided", "failed", "timed_out"}) is rewritten after every entry,
    and the Markdown goes to `out` with suffix .md.
    """
    names = list(names)
    unknown = sorted(set(names) - set(registry))
    if unknown:
        raise ValueError(f"unknown benchmark entries {unknown}; known: {', '.join(registry)}")
    results: list[Result] = []
    for name in names:
        entry = registry[name]
        limit = time_limit(entry, timeout_s, (timeouts or {}).get(name))
        results.append(run_isolated(entry, child, timeout_s=limit or 0))
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
