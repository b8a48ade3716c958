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

