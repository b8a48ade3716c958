"""A drain notice every rank of a run agrees on, and the wait for the node to go: the
trainer's context's part for preemptions (its `preemption` function is a
`NodeDrainWatch`'s or Ray Train's watcher's, see raysweep.worker.drain). Ray-free: a
trainer's `TrainContext` loads no Ray."""

from __future__ import annotations

import time
from collections.abc import Callable

PREEMPTION_CHECK_STEPS = 4
"""Ranks of a worker group agree on a drain notice every this many steps (one
all-reduce of a flag); one worker checks every step (no collective)."""
PREEMPTION_WAIT_MARGIN_S = 30.0
"""After its just-in-time checkpoint a worker waits for its node to go; if it is still
there this long after the deadline (the drain was cancelled), it trains on."""


class DrainAgreement:
    """The trainer's context's part that watches drain notices: `deadline(step)` is a
    notice every rank agrees on (one worker: at every step; a group: every
    PREEMPTION_CHECK_STEPS, by an all-reduce), `wait_for_node_to_go` takes no more
    batches until the node goes."""

    def __init__(self, notice: Callable[[], float | None] | None, world_size: int, device: object,
                 peer_lost: Callable[[], bool] | None = None) -> None:
        self.notice, self.world_size, self.device = notice, world_size, device
        self.peer_lost = peer_lost

    def deadline(self, step: int) -> float | None:
        if self.notice is None:
            return None
        import torch
        import torch.distributed as dist

        if self.world_size == 1 or not dist.is_initialized():
            return self.notice()
        if (step + 1) % PREEMPTION_CHECK_STEPS:
            return None
        deadline = self.notice()
        agreed = torch.tensor([1.0 if deadline is not None else 0.0, -(deadline if deadline is not None else
                                                                          float("inf"))],
                              dtype=torch.float64, device=self.device)  # type: ignore[arg-type]
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)  # (any rank notified; the earliest deadline)
        return -float(agreed[1]) if agreed[0] > 0 else None

    def wait_for_node_to_go(self, deadline: float) -> None:
        """Ray Train tears the group down at the deadline and restarts it on other nodes
        from the checkpoint just saved, so every row of the epoch is still seen once. A
        drain that never ends in a teardown (cancelled) lets training go on
        PREEMPTION_WAIT_MARGIN_S after its deadline; a rank that knows another one is
        gone (`peer_lost`) stops waiting then, and fails at its next collective."""
        while time.time() < deadline + PREEMPTION_WAIT_MARGIN_S:
            if self.peer_lost is not None and self.peer_lost():
                return
            time.sleep(0.2)
