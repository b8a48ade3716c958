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
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Result = dict[str, Any]


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
    """

    name: str
    run: Callable[[Any], Result]
    table: Callable[[Result], list[str]]
    target: str
    met: Callable[[Result], bool | None]


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
                 met: Callable[[Result], bool | None]) -> Callable[[Callable[[Any], Result]], Callable[[Any], Result]]:
        """Decorator: register the decorated function as the entry's `run`."""

        def decorate(run: Callable[[Any], Result]) -> Callable[[Any], Result]:
            self.add(Entry(name, run, table, target, met))
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


def run_entry(entry: Entry, context: Any) -> Result:
    """Run one entry; its result with `entry`, `target`, `met` and `bench_wall_s`.

    An entry that raises counts as missed: its result holds the error (and the
    traceback goes to stderr), so the other entries still run.
    """
    started = time.perf_counter()
    try:
        result = dict(entry.run(context))
        result.setdefault("entry", entry.name)
        met = entry.met(result)
    except Exception as exc:
        traceback.print_exc()
        result, met = {"entry": entry.name, "error": f"{type(exc).__name__}: {exc}"}, False
    if met is not None and not isinstance(met, bool):
        met = bool(met)  # numpy bools and the like: keep the JSON plain
    result["target"], result["met"] = entry.target, met
    result["bench_wall_s"] = round(time.perf_counter() - started, 1)
    return result


def markdown(registry: Mapping[str, Entry], results: list[Result], header: Sequence[str] = ()) -> str:
    lines = [*header, ""] if header else []
    for r in results:
        entry = registry[r["entry"]]
        baseline = f"baseline: {r['baseline']}; " if r.get("baseline") else ""
        lines += [f"**{entry.name}** ({baseline}target: {entry.target}; met: {verdict(r['met'])})", ""]
        if "error" in r:
            lines += [f"Failed: {r['error']}", ""]
        else:
            lines += entry.table(r)
    return "\n".join(lines)


def summary(results: list[Result]) -> dict[str, list[str]]:
    return {"missed": [r["entry"] for r in results if r["met"] is False],
            "not_decided": [r["entry"] for r in results if r["met"] is None]}


def run_entries(registry: Mapping[str, Entry], names: Iterable[str], context: Any, *, out: Path | str | None = None,
                header: Sequence[str] = (), meta: Mapping[str, Any] | None = None, echo: bool = True) -> bool:
    """Run `names` in order; True when no entry missed its target (an entry that
    cannot tell, `met` None, misses nothing).

    With `out`, the JSON ({**meta, "results": [...], "missed", "not_decided"}) is
    rewritten after every entry, and the Markdown goes to `out` with suffix .md.
    """
    names = list(names)
    unknown = sorted(set(names) - set(registry))
    if unknown:
        raise ValueError(f"unknown benchmark entries {unknown}; known: {', '.join(registry)}")
    results: list[Result] = []
    for name in names:
        results.append(run_entry(registry[name], context))
        if echo:
            print(f"{name}: done in {results[-1]['bench_wall_s']} s; target met: {verdict(results[-1]['met'])}",
                  flush=True)
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
