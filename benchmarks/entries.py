"""The benchmark entries of `scripts/bench.py`: one module each (`benchmarks.<module>`),
registered into `ENTRIES` when its module is imported. `load_all()` imports them all
(the runner, `scripts/merge_bench.py`); an entry's own process imports only its module
(`benchmarks.child`)."""

from __future__ import annotations

import importlib

from benchmarks.core import Child, Registry

ENTRIES = Registry()

# In the order they run and are shown.
MODULES = ("overhead", "step", "dp", "ingest", "stream", "stream_ranks", "stream_memory", "fingerprint", "search",
           "search_mo", "throughput", "tracking", "columns", "fsdp")

# How an entry's process finds the entries and makes its context.
REGISTRY_REF = "benchmarks.entries:ENTRIES"
CONTEXT_REF = "benchmarks.common:make_bench"


def load_all() -> Registry:
    for name in MODULES:
        importlib.import_module(f"benchmarks.{name}")
    return ENTRIES


def child(args: dict) -> Child:
    """The `Child` that runs these entries with the run's arguments."""
    return Child(REGISTRY_REF, CONTEXT_REF, args)
