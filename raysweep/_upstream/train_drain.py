"""Drain notices (a spot node's reclaim): the nodes Ray Core has under one, and, inside
a Ray Train worker, the deadline Train V2's preemption watcher passed to it.

Why private: Ray has no public API for drain notices (Train V2's own watcher reads
them through `ray._private.state`); the worker's view is Train's internal context.
Recheck on an upgrade: tests/faults/test_cluster_preemption.py and the cross-host
drain case.
"""

from __future__ import annotations

from raysweep._upstream import Pin

CHECKED = ("2.60.0", "2.61.0")
PINS: list[Pin] = [  # (python -m raysweep._upstream prints the current digests)
    Pin('ray._private.state:GlobalState.get_draining_nodes', '14c0ea6d4336d9f8'),
    Pin('ray.train.v2._internal.execution.context:get_train_context', 'a9d3e397e6ee8458'),
    Pin('ray.train.v2._internal.constants:DEFAULT_PREEMPTION_DEADLINE_S', ''),
]


def draining_nodes() -> dict[str, int]:
    """Ray Core's nodes under a drain notice, as {node id (hex): deadline in ms since the
    epoch, 0 when the notice has none}: one GCS call, the one Train V2's own preemption
    watcher makes (`ray/train/v2/_internal/execution/preemption.py`), from any
    process connected to the cluster."""
    import ray._private.state

    return dict(ray._private.state.state.get_draining_nodes())



_DRAIN_SEEN_AT: dict[str, float] = {}



def train_drain_deadline() -> float | None:
    """In a Ray Train worker: the Unix time at which a node of this worker group will be
    taken away, once Train V2's preemption watcher has told the worker of a drain
    notice (`ray drain-node --reason PREEMPTION`), else None. Read from the worker's
    own context (`get_train_context().preemption_context`), no collective; a notice
    without a deadline gets Train's own default (DEFAULT_PREEMPTION_DEADLINE_S after
    it was first seen)."""
    import time

    from ray.train.v2._internal.constants import DEFAULT_PREEMPTION_DEADLINE_S
    from ray.train.v2._internal.execution.context import get_train_context

    info = get_train_context().preemption_context.preemption_info
    if info is None:
        return None
    if info.deadline_ms:
        return float(info.deadline_ms) / 1000
    seen = _DRAIN_SEEN_AT.setdefault(",".join(info.preempted_node_ids), time.time())
    return seen + DEFAULT_PREEMPTION_DEADLINE_S
