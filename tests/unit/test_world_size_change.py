"""A mid-epoch checkpoint resumed at another world size (a run restarted on fewer or
more workers): the epoch's rest is sharded over the new ranks, so across every part of
the epoch each row is trained on exactly once. Ranks are simulated in one process (no
process group: the context's collectives are the identity); the multi-process case is
tests/integration/test_strategies.py's."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from raysweep.data.arrays import ArraySet
from raysweep.data.shards import epoch_rows, num_train_batches, train_batch_indices
from raysweep.worker.checkpoint import CheckpointSettings
from raysweep.worker.context import CURSOR, TrainContext

ROWS, BATCH, SEED = 203, 8, 3


def _split() -> ArraySet:
    ids = np.arange(ROWS, dtype=np.float32)[:, None]  # (feature 0: the row id)
    return ArraySet.from_matrix(ids, np.zeros(ROWS, dtype=np.int64))


def _part(world: int, checkpoint: dict | None, steps: int | None, batch: int = BATCH) -> tuple[list[int], dict | None]:
    """Every rank of a `world`-rank run trains from `checkpoint` for `steps` batches of
    epoch 1 (None: to the epoch's end) with a cursor saved every batch; returns the
    row ids trained and rank 0's latest cursor checkpoint."""
    split, seen, saved = _split(), [], []
    for rank in range(world):
        ctx = TrainContext(params={}, num_epochs=3, seed=SEED, train=split, validation=split, rank=rank,
                           world_size=world, checkpoint=checkpoint,
                           report_fn=lambda m, c, r=rank: saved.append(c) if r == 0 and c else None,
                           checkpoints=CheckpointSettings(every_steps=1))
        for i, (x, _) in enumerate(ctx.train_batches(1, batch, state=lambda: {"epoch": 0})):
            if steps is not None and i >= steps:  # (asking for it saved the cursor after `steps` batches)
                break
            seen += x[:, 0].int().tolist()
    return seen, (saved[-1] if saved else None)


@pytest.mark.parametrize("worlds", [(3, 2), (2, 4), (4, 1, 3), (1, 5, 2, 2), ((2, 16), (4, 8)), ((2, 8), (2, 5))])
def test_every_row_once_across_changes_of_world_size(worlds: tuple) -> None:
    """Each part: a world size, or (world size, batch size) where the batch size changes too."""
    checkpoint: dict[str, Any] | None = {"epoch": 0}  # (epoch 0 done: epoch 1 from its start)
    seen: list[int] = []
    for i, part_of in enumerate(worlds):
        world, batch = part_of if isinstance(part_of, tuple) else (part_of, BATCH)
        last = i == len(worlds) - 1
        part, checkpoint = _part(world, checkpoint, None if last else 3, batch)
        seen += part
        if not last:
            assert checkpoint is not None and checkpoint[CURSOR]["world_size"] == world
    counts = Counter(seen)
    assert set(counts) == set(range(ROWS)) and set(counts.values()) == {1}, counts.most_common(3)


def test_the_same_world_size_resumes_exactly_as_before() -> None:
    """No change of world size: the cursor's step, the same shards (nothing recomputed)."""
    first, checkpoint = _part(2, {"epoch": 0}, 5)
    assert checkpoint is not None
    assert checkpoint[CURSOR] == {"epoch": 1, "step": 5, "world_size": 2, "batch_size": BATCH, "done": []}
    rest, _ = _part(2, checkpoint, None)
    whole = [int(i) for r in range(2) for b in train_batch_indices(ROWS, r, 2, BATCH, SEED, 1) for i in b]
    assert sorted(first + rest) == sorted(whole) == list(range(ROWS))


def test_epoch_rows_and_batch_counts_after_a_change() -> None:
    done = ((3, BATCH, 4),)
    rest = epoch_rows(ROWS, SEED, 1, done)
    assert len(rest) == ROWS - 3 * 4 * BATCH
    batches = [train_batch_indices(ROWS, r, 2, BATCH, SEED, 1, done) for r in range(2)]
    assert {len(b) for b in batches} == {num_train_batches(len(rest), 2, BATCH)}  # (the same count on every rank)
    assert sorted(int(i) for b in batches for batch in b for i in batch) == sorted(rest.tolist())
