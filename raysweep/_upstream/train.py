"""Ray Train V2 internals: its placement-group cleaner, made safe for live runs and
quick to stop; and drain notices (a spot node's reclaim): the nodes Ray Core has
under one and, inside a Train worker, the deadline Train's preemption watcher passed
to it.

## The placement-group cleaner

Every worker-group run (`TorchTrainer.fit`) gets a detached `PlacementGroupCleaner`
actor that removes the run's placement group if the Train controller dies without
doing so. In Ray 2.60 (`ray/train/v2/_internal/execution/controller/
placement_group_cleaner.py`, `.../callbacks/placement_group_callback.py`) it has two
faults that raysweep's worker-group trials hit (docs/ray-pg-cleaner-bug.md):

1. **A live run's placement group removed.** `_monitor_loop` removes the group when
   `is_actor_alive(controller)` is falsy; `is_actor_alive` returns
   `actor_state and actor_state.state != "DEAD"`, so a state-API answer of None
   ("no such actor") reads as dead. The state API finds "the cluster" through the
   dashboard address of `ray_current_cluster` (the machine-wide `/tmp/ray` file Ray
   rewrites whenever a cluster starts on the machine): with another cluster started
   since, it asks that cluster, which has no such actor, and the workers of the live
   run are destroyed ("Destroying worker since its placement group was removed").
2. **13 s of teardown.** `stop()` joins the monitor thread for up to
   `2 * check_interval_s + GET_ACTOR_TIMEOUT_S` (12 s) while that thread sits in a
   state-API call (a new HTTP client per second, through the dashboard), and the
   controller's `_stop_cleaner` waits on `stop()` just as long: every worker-group
   run ends about 13 s after its last report.

`LivePlacementGroupCleaner` asks the GCS directly through the actor's own connection
(no dashboard, no address lookup), counts the controller dead only when the GCS says
DEAD (or has had no record of it for NOT_FOUND_GRACE_S), and stops at once (the
monitor thread is a daemon: it dies with the actor process, so it cannot remove a
group after stop). `LiveCleanerCallback` launches it instead of Ray's; `install`
swaps it into a trainer's default callbacks, and `RaysweepTorchTrainer` (the
TorchTrainer every worker-group run uses) does that in its default callbacks.

## Drain notices

Ray Core's drain notices are read the way Train V2's own preemption watcher reads them
(`ray._private.state`); a worker's view is Train's internal context.

Why private: Train V2 has no public way to replace a default callback, and Ray has no
public API for drain notices. Recheck on an upgrade: whether Ray fixed either cleaner
fault (docs/ray-pg-cleaner-bug.md; then delete the cleaner), else the pinned sources;
tests/integration/test_worker_groups.py, tests/faults/test_cluster_preemption.py and
the cross-host drain case.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any

import ray
from ray._common.constants import HEAD_NODE_RESOURCE_NAME
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.train.v2._internal.execution.controller.placement_group_cleaner import PlacementGroupCleaner

from raysweep._upstream import Pin

logger = logging.getLogger(__name__)

CHECKED = ("2.60.0", "2.61.0")
PINS: list[Pin] = [  # (python -m raysweep._upstream prints the current digests)
    Pin('ray.train.v2._internal.execution.controller.placement_group_cleaner:PlacementGroupCleaner',
        '82a5ec4420fd2ee5'),
    Pin('ray.train.v2._internal.callbacks.placement_group_callback:PlacementGroupCleanerCallback', '6f3589ac2afd9d03'),
    Pin('ray.train.v2.api.data_parallel_trainer:DataParallelTrainer._create_default_callbacks', '26327738c2efc146'),
    Pin('ray._common.constants:HEAD_NODE_RESOURCE_NAME', ''),
    Pin('ray._private.state:actors', '96a84dd8aeb2eef6'),
    Pin('ray._private.state:GlobalState.get_draining_nodes', '14c0ea6d4336d9f8'),
    Pin('ray.train.v2._internal.execution.context:get_train_context', 'a9d3e397e6ee8458'),
    Pin('ray.train.v2._internal.constants:DEFAULT_PREEMPTION_DEADLINE_S', ''),
]

NOT_FOUND_GRACE_S = 30.0
"""How long the GCS may have no record of the controller before it counts as gone (a
dead actor's record stays in the GCS; none at all means it was never there, or was
evicted long after its death)."""


def actor_state(actor_id: str) -> str | None:
    """The actor's state as the GCS has it ("ALIVE", "RESTARTING", "DEAD", ...), None
    when the GCS has no record of it. Raises when the GCS cannot be asked."""
    from ray._private import state

    info = state.actors(actor_id=actor_id)
    return info.get("State") if info else None


class LivePlacementGroupCleaner(PlacementGroupCleaner):
    """Ray's cleaner, with the controller's liveness from the GCS and an instant stop."""

    def _controller_gone(self, unknown_since: float | None) -> tuple[bool, float | None]:
        """(gone, since when the GCS has had no record of it)."""
        try:
            state = actor_state(self._controller_actor_id)
        except Exception as exc:  # the GCS unreachable for a moment: never a reason to remove
            logger.warning("cannot ask the GCS about controller %s: %s", self._controller_actor_id, exc)
            return False, unknown_since
        if state == "DEAD":
            return True, None
        if state is None:
            since = unknown_since if unknown_since is not None else time.monotonic()
            return time.monotonic() - since > NOT_FOUND_GRACE_S, since
        return False, None

    def _monitor_loop(self) -> None:
        group = None
        unknown_since: float | None = None
        while not self._stop_event.is_set():
            try:
                group = self._pg_queue.get(timeout=self._check_interval_s)
            except queue.Empty:
                pass
            if self._stop_event.is_set():
                break
            gone, unknown_since = self._controller_gone(unknown_since)
            if not gone:
                continue
            while True:
                try:
                    group = self._pg_queue.get_nowait()
                except queue.Empty:
                    break
            if not self._stop_event.is_set():
                self._cleanup_placement_group(group)
            break
        self._exit()
        self._monitor_thread = None

    def stop(self) -> None:
        """Stop at once: the monitor thread sees the event before any removal, and dies
        with this process when it is in the middle of a GCS call."""
        self._stop_event.set()
        self._exit()


class LiveCleanerCallback(PlacementGroupCleanerCallback):
    """Ray's callback, launching LivePlacementGroupCleaner (its stop returns at once)."""

    def __init__(self) -> None:
        super().__init__(stop_timeout=5.0)

    def after_controller_start(self, train_run_context: Any) -> None:
        self._controller_actor_id = ray.get_runtime_context().get_actor_id()
        actor: Any = ray.remote(num_cpus=0)(LivePlacementGroupCleaner)
        try:
            cleaner = actor.options(
                lifetime="detached", get_if_exists=False, resources={HEAD_NODE_RESOURCE_NAME: 0.001},
                scheduling_strategy="DEFAULT",
            ).remote(controller_actor_id=self._controller_actor_id, check_interval_s=self._check_interval_s,
                     get_actor_timeout_s=self._get_actor_timeout_s, stop_timeout=self._stop_timeout)
        except Exception as exc:
            logger.warning("cannot launch the placement-group cleaner: %s", exc)
            self._cleaner = None
            return
        self._cleaner = cleaner
        cleaner.start_monitoring.remote()


def install(callbacks: list[Any]) -> list[Any]:
    """A trainer's default callbacks with Ray's cleaner callback replaced by ours."""
    swapped = [LiveCleanerCallback() if type(cb) is PlacementGroupCleanerCallback else cb for cb in callbacks]
    if not any(isinstance(cb, LiveCleanerCallback) for cb in swapped):
        raise RuntimeError("Ray Train's PlacementGroupCleanerCallback is not among the trainer's callbacks "
                           "(Ray changed): raysweep/_upstream/train.py needs a look")
    return swapped


class RaysweepTorchTrainer(TorchTrainer):
    """TorchTrainer with Ray's placement-group cleaner swapped for one that never
    removes a live run's group and stops at once."""

    def _create_default_callbacks(self) -> list[Any]:
        return install(super()._create_default_callbacks())  # type: ignore[misc]  # (V2's method)


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
