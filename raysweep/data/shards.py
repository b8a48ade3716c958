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
- validation: rank r takes one contiguous block; every row is evaluated exactly
  once and the sums are all-reduced.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np


def epoch_permutation(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The same permutation on every rank for a given (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def num_train_batches(num_rows: int, world_size: int, batch_size: int) -> int:
    """Batches every rank yields per epoch (the largest shard's batch count)."""
    return max(1, math.ceil(math.ceil(num_rows / world_size) / batch_size))


def train_shard_indices(
    num_rows: int, rank: int, world_size: int, seed: int, epoch: int
) -> np.ndarray:
    return epoch_permutation(num_rows, seed, epoch)[rank::world_size]


def train_batch_indices(
    num_rows: int, rank: int, world_size: int, batch_size: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """This rank's row indices for the epoch, cut into equal-count batches."""
    if num_rows < world_size:
        raise ValueError(f"{num_rows} training rows cannot feed {world_size} workers")
    shard = train_shard_indices(num_rows, rank, world_size, seed, epoch)
    # array_split keeps every batch non-empty as long as len(shard) >= batches.
    return np.array_split(shard, num_train_batches(num_rows, world_size, batch_size))


def validation_block(num_rows: int, rank: int, world_size: int) -> slice:
    """Rank r's contiguous block; the blocks partition range(num_rows)."""
    bounds = np.linspace(0, num_rows, world_size + 1).round().astype(int)
    return slice(int(bounds[rank]), int(bounds[rank + 1]))


def iter_blocks(num_rows: int, batch_size: int, rows: slice) -> Iterator[slice]:
    for start in range(rows.start, rows.stop, batch_size):
        yield slice(start, min(start + batch_size, rows.stop))
