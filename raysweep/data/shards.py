"""Which rows each rank reads: pure functions of (rows, rank, world size, seed, epoch).

The schema is checked with pyarrow on the driver before Ray starts. The driver
reads the columns once, in file order, into Ray's object store; every worker maps
them (zero-copy on its node) and shards by row index. Reading inside the workers
with Ray Data deadlocks when Train's workers hold every CPU (a 2-core laptop with
2 workers): Ray Data's read tasks then never get one.

- training: each epoch a permutation seeded by (seed, epoch), identical on every
  rank; rank r takes positions r, r+W, r+2W, ... so the shards are disjoint and
  together cover every row. Each rank's rows are cut into the *same* number of
  batches, so DDP ranks never wait on a batch that does not come (Ray's
  `streaming_split(equal=True)` would drop up to W-1 rows instead).
- a mid-epoch checkpoint resumed at another world size or batch size (a run restarted
  on fewer or more workers): the epoch goes on over the rows the earlier part did not
  take, in the permutation's order, sharded the same way over the new ranks (`done`:
  the earlier parts as (world size, batch size, steps)); no row twice, none skipped.
- validation: rank r takes one contiguous block; every row is evaluated exactly
  once and the sums are all-reduced.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def epoch_permutation(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The same permutation on every rank for a given (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def num_train_batches(num_rows: int, world_size: int, batch_size: int) -> int:
    """Batches every rank yields per epoch (the largest shard's batch count)."""
    return max(1, math.ceil(math.ceil(num_rows / world_size) / batch_size))


Segments = tuple[tuple[int, int, int], ...]
"""The parts of an epoch trained before a change of world or batch size: (world size,
batch size, steps) each, in order."""


def train_shard_indices(
    num_rows: int, rank: int, world_size: int, seed: int, epoch: int
) -> np.ndarray:
    return epoch_permutation(num_rows, seed, epoch)[rank::world_size]


def epoch_rows(num_rows: int, seed: int, epoch: int, done: Segments = ()) -> np.ndarray:
    """The epoch's rows still to train, in the permutation's order: all of them, less
    those the parts in `done` took (each part's ranks' first `steps` batches)."""
    rows = epoch_permutation(num_rows, seed, epoch)
    for world, batch_size, steps in done:
        cut = num_train_batches(len(rows), world, batch_size)
        taken = [b for r in range(world) for b in np.array_split(rows[r::world], cut)[:steps]]
        if taken:
            rows = rows[~np.isin(rows, np.concatenate(taken))]
    return rows


def train_batch_indices(
    num_rows: int, rank: int, world_size: int, batch_size: int, seed: int, epoch: int, done: Segments = ()
) -> list[np.ndarray]:
    """This rank's row indices for the epoch (its rest after `done`), cut into
    equal-count batches."""
    if num_rows < world_size:
        raise ValueError(f"{num_rows} training rows cannot feed {world_size} workers")
    if not done:
        shard = train_shard_indices(num_rows, rank, world_size, seed, epoch)
        # array_split keeps every batch non-empty as long as len(shard) >= batches.
        return np.array_split(shard, num_train_batches(num_rows, world_size, batch_size))
    rows = epoch_rows(num_rows, seed, epoch, done)
    return np.array_split(rows[rank::world_size], num_train_batches(len(rows), world_size, batch_size))


def validation_block(num_rows: int, rank: int, world_size: int) -> slice:
    """Rank r's contiguous block; the blocks partition range(num_rows)."""
    bounds = np.linspace(0, num_rows, world_size + 1).round().astype(int)
    return slice(int(bounds[rank]), int(bounds[rank + 1]))


def iter_blocks(num_rows: int, batch_size: int, rows: slice) -> Iterator[slice]:
    for start in range(rows.start, rows.stop, batch_size):
        yield slice(start, min(start + batch_size, rows.stop))


# The stream loader: each rank reads only the (file, row group) units its rows are in.
#
# Each epoch the units are put in a seeded order (the same on every rank); their rows,
# in that order, are cut into W contiguous ranges of equal size (+-1 row); rank r reads
# only the units overlapping range r. Within its range a rank shuffles rows in windows
# of `window` rows (a bounded buffer), each window's order seeded by (seed, epoch,
# rank, window index): so the row at any position is a pure function of those, and a
# resume at step s reads only the window that step starts in.

StreamUnit = tuple[int, int, int]
"""(file index, row group index, rows)"""
Segment = tuple[int, int, int, int]
"""(file index, row group index, first row, end row) inside the row group"""


def unit_order(num_units: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's order of (file, row group) units: the same on every rank."""
    return np.random.default_rng([seed, epoch, 1]).permutation(num_units)


def contiguous_range(num_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank r's rows [lo, hi) of a sequence of `num_rows`: W ranges of equal size +-1."""
    return rank * num_rows // world_size, (rank + 1) * num_rows // world_size


def segments(units: list[StreamUnit], lo: int, hi: int) -> list[Segment]:
    """The pieces of `units` (in this order) that hold rows [lo, hi) of their concatenation."""
    found: list[Segment] = []
    start = 0
    for file, group, rows in units:
        end = start + rows
        if end > lo and start < hi:
            found.append((file, group, max(lo, start) - start, min(hi, end) - start))
        if end >= hi:
            break
        start = end
    return found


def batch_offsets(num_rows: int, num_batches: int) -> np.ndarray:
    """Where each of `num_batches` batches starts in `num_rows` rows (array_split's cut:
    sizes differ by at most one), plus the end."""
    sizes = np.full(num_batches, num_rows // num_batches, dtype=np.int64)
    sizes[: num_rows % num_batches] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def window_permutation(size: int, seed: int, epoch: int, rank: int, window: int) -> np.ndarray:
    """The order of one shuffle window's rows."""
    return np.random.default_rng([seed, epoch, rank, window, 2]).permutation(size)


@dataclass(frozen=True)
class StreamSettings:
    window_rows: int = 16384
    """Shuffle window (and read unit) in rows: a rank shuffles within windows this big."""
    prefetch_windows: int = 2
    """Decoded windows kept ready ahead of the trainer."""
    read_threads: int = 2
    """Background threads reading and decoding windows."""
