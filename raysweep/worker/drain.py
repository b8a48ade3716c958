"""Drain notices for a trial that trains in its Tune trial's own process.

A Ray Train worker group has Train's preemption watcher (read through
`_upstream.train.train_drain_deadline`). A one-worker sweep trial in the default
`worker_group: auto` trains in its Tune trial's process, with no worker group and
so no watcher: `NodeDrainWatch` is that watcher for the one node the process is on.
With a notice the training loop saves a just-in-time checkpoint and takes no more
batches; when the node goes, Ray marks the trial's actor as preempted
(`RayActorError.preempted`), which Tune does not count against `max_failures`, and
Tune runs the trial again on another node from that checkpoint.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from raysweep._upstream import train as upstream_train

POLL_S = 1.0
"""Seconds between two asks of the GCS (one call; a cloud's notice comes about 30 s
(AWS: 2 min) before the node goes)."""
DEFAULT_DEADLINE_S = 120.0
"""A notice without a deadline: assume the node goes this long after it was seen
(Train V2's own default, DEFAULT_PREEMPTION_DEADLINE_S)."""


class NodeDrainWatch:
    """A daemon thread that asks Ray, every `poll_s`, whether `node_id` is under a
    drain notice; `deadline()` (the training loop's preemption function) reads its
    last answer, so a training step never waits on the GCS. Use as a context manager:
    the thread stops with the run (a reused trial process runs the next trial)."""

    def __init__(self, node_id: str, poll_s: float = POLL_S,
                 draining: Callable[[], dict[str, int]] = upstream_train.draining_nodes) -> None:
        self.node_id, self.poll_s, self._draining = node_id, poll_s, draining
        self._deadline: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="raysweep-drain-watch", daemon=True)

    def __enter__(self) -> NodeDrainWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.poll_s + 5)

    def deadline(self) -> float | None:
        """The Unix time at which this node will be taken away, once a notice was seen."""
        return self._deadline

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._deadline = self._read()
            except Exception:  # (a GCS blip: keep the last answer, ask again)
                pass
            self._stop.wait(self.poll_s)

    def _read(self) -> float | None:
        deadline_ms = self._draining().get(self.node_id)
        if deadline_ms is None:
            return None
        if deadline_ms:
            return deadline_ms / 1000
        return self._deadline if self._deadline is not None else time.time() + DEFAULT_DEADLINE_S


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

    def __init__(self, notice: Callable[[], float | None] | None, world_size: int, device: object) -> None:
        self.notice, self.world_size, self.device = notice, world_size, device

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

    @staticmethod
    def wait_for_node_to_go(deadline: float) -> None:
        """Ray Train tears the group down at the deadline and restarts it on other nodes
        from the checkpoint just saved, so every row of the epoch is still seen once. A
        drain that never ends in a teardown (cancelled) lets training go on
        PREEMPTION_WAIT_MARGIN_S after its deadline."""
        while time.time() < deadline + PREEMPTION_WAIT_MARGIN_S:
            time.sleep(0.2)
