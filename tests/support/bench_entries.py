"""Benchmark entries for the bench-limit tests (unit and fault tiers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raysweep.testing.bench import Entry


def entry(run: Callable[[Any], dict], name: str = "e", timeout_s: float | None = None) -> Entry:
    return Entry(name, run, lambda r: ["table"], "anything", lambda r: True, timeout_s)


def names(stages: list[dict]) -> list[str]:
    """The stages' names, without a leading "start" (kept when the entry took over 50 ms,
    as on a busy machine, to name its first stage)."""
    out = [s["stage"] for s in stages]
    return out[1:] if out[:1] == ["start"] else out
