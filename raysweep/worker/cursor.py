"""Where a resumed run starts and what its checkpoints carry besides the trainer's
state: the data cursor of a mid-epoch checkpoint and the count of drain notices. A
part of the trainer's context (its `checkpoints` settings and resumed `checkpoint`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raysweep.data.shards import Segments
from raysweep.worker.checkpoint import CheckpointSettings

CURSOR = "cursor"
"""Key of the data cursor in a mid-epoch checkpoint's state: {epoch, step, world_size,
batch_size, done}: `step` batches of the epoch's part that ran at `world_size` ranks
and `batch_size`, after the parts in `done` ([world size, batch size, steps] each)
that ran at other sizes (raysweep.data.shards)."""
PREEMPTIONS = "raysweep_preemptions"
"""Key of the count of drain notices the run checkpointed for, in every checkpoint the
context passes on (failure.max_preemptions); `restore` leaves it out of what it returns."""


class PreemptedTooOften(RuntimeError):
    """The run was preempted more often than failure.max_preemptions allows: it fails
    at its next start, from the checkpoint the last drain notice left."""


@dataclass(frozen=True)
class Checkpointer:
    """When the run keeps its state, where a resumed one starts, and the cursor
    checkpoints it saves mid-epoch."""

    settings: CheckpointSettings
    resumed: dict[str, Any] | None
    """The checkpoint the run resumed from (None: from scratch)."""
    world_size: int

    @property
    def start_epoch(self) -> int:
        if self.resumed is None:
            return 0
        if CURSOR in self.resumed:
            return int(self.resumed[CURSOR]["epoch"])
        return int(self.resumed["epoch"]) + 1

    @property
    def start_step(self) -> int:
        cursor = self.resumed.get(CURSOR) if self.resumed else None
        if not cursor:
            return 0
        return int(cursor["step"]) if int(cursor.get("world_size", self.world_size)) == self.world_size else 0

    def resume_point(self, batch_size: int) -> tuple[int, Segments]:
        """(first batch, earlier parts) of `start_epoch`'s rest at `batch_size`: a part
        saved at another world or batch size becomes a done part."""
        cursor = self.resumed.get(CURSOR) if self.resumed else None
        if not cursor:
            return 0, ()
        done = tuple((int(w), int(b), int(s)) for w, b, s in cursor.get("done", ()))
        world, batch = int(cursor.get("world_size", self.world_size)), int(cursor.get("batch_size", batch_size))
        if (world, batch) == (self.world_size, batch_size):
            return int(cursor["step"]), done
        return 0, (*done, (world, batch, int(cursor["step"])))

    @property
    def preemptions_before(self) -> int:
        return int(self.resumed.get(PREEMPTIONS, 0)) if self.resumed else 0

    def due(self, epoch: int, num_epochs: int) -> bool:
        """Whether an epoch's report keeps a checkpoint (every N epochs, and the last)."""
        return (epoch + 1) % self.settings.every_epochs == 0 or epoch + 1 >= num_epochs

    def cursor_state(self, state: dict[str, Any], epoch: int, step: int, batch_size: int, done: Segments,
                     preemptions: int) -> dict[str, Any]:
        """A mid-epoch checkpoint: the trainer's `state`, the cursor and the drain count."""
        cursor = {"epoch": epoch, "step": step, "world_size": self.world_size, "batch_size": batch_size,
                  "done": [list(d) for d in done]}
        return {**state, CURSOR: cursor, PREEMPTIONS: preemptions}

    @staticmethod
    def check_preemptions(preemptions: int, limit: int) -> None:
        """failure.max_preemptions, at a run's start: past it, the run fails in one line."""
        if preemptions > limit:
            raise PreemptedTooOften(f"preempted {preemptions} times, more than failure.max_preemptions "
                                    f"({limit}); its latest checkpoint is kept")
