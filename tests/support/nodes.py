"""Helpers for fault cases on a `cluster up` cluster whose nodes are process groups of
this machine (the `nodes` fixture of tests/faults/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path


def node_group_of(pid: int, node_groups: list[int]) -> int:
    """The process group of the worker node whose raylet started `pid` (up the parents)."""
    current = pid
    while current > 1:
        group = os.getpgid(current)
        if group in node_groups:
            return group
        current = int(Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()[1])
    raise AssertionError(f"process {pid} does not descend from a worker node")
