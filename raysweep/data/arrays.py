"""A split's rows as batches: the interface both loaders give the trainer's context,
and the memory loader (columns read once on the driver, mapped by every worker).

Each column is held compactly in its own dtype and shape (`raysweep.data.columns`);
only the tabular shorthand's scalar features become one float32 matrix.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from raysweep.data.columns import (  # noqa: F401  (re-exported for the benchmarks)
    Block,
    ColumnDataError,
    Layout,
    block_nbytes,
    block_rows,
    column_to_numpy,
    label_dtype,
    numpy_dtype,
    slice_rows,
    take,
    to_matrix,
)
from raysweep.data.shards import Segments, iter_blocks, train_batch_indices, validation_block
from raysweep.data.storage import open_parquet

if TYPE_CHECKING:
    from raysweep.data.files import ResolvedData

Batch = Any
"""What a trainer iterates: `(x, y)`, `x` alone (no label), or a dict of named columns."""


class DataSplit(Protocol):
    """One split (train or validation) as a rank sees it, whichever loader holds it."""

    layout: Layout

    def __len__(self) -> int: ...

    def train_blocks(self, rank: int, world_size: int, batch_size: int, seed: int, epoch: int,
                     start_step: int = 0, done: Segments = ()) -> Iterator[Block]:
        """This rank's shard of `epoch` as host blocks, from batch `start_step` on; the
        same batch count on every rank, every row once across ranks. `done`: the parts
        of the epoch trained at other world sizes (see raysweep.data.shards)."""
        ...

    def eval_blocks(self, rank: int, world_size: int, batch_size: int) -> Iterator[Block]:
        """This rank's block of rows, in order, as host blocks; all cover every row once."""
        ...

    def local_rows(self, rank: int, world_size: int, train: bool) -> int:
        """How many rows this rank gets per epoch (train) or per evaluation."""
        ...


class SplitBatches:
    """Trainer batches straight from a split's blocks (no transform, no device): for
    tests and benchmarks; runs get theirs through `TrainContext`."""

    layout: Layout

    def train_blocks(self, rank: int, world_size: int, batch_size: int, seed: int, epoch: int,
                     start_step: int = 0, done: Segments = ()) -> Iterator[Block]:
        raise NotImplementedError

    def eval_blocks(self, rank: int, world_size: int, batch_size: int) -> Iterator[Block]:
        raise NotImplementedError

    def train_batches(self, rank: int, world_size: int, batch_size: int, seed: int, epoch: int,
                      start_step: int = 0) -> Iterator[Batch]:
        for block in self.train_blocks(rank, world_size, batch_size, seed, epoch, start_step):
            yield self.layout.deliver(block)

    def eval_batches(self, rank: int, world_size: int, batch_size: int) -> Iterator[Batch]:
        for block in self.eval_blocks(rank, world_size, batch_size):
            yield self.layout.deliver(block)


class ArraySet(SplitBatches):
    """The memory loader's split: each used column as one host array, in file order
    (read-only when mapped from Ray's object store)."""

    def __init__(self, block: Block, layout: Layout) -> None:
        self.block, self.layout = block, layout

    @classmethod
    def from_matrix(cls, features: np.ndarray, labels: np.ndarray | None) -> ArraySet:
        """A tabular split from a float32 feature matrix and labels built in memory."""
        names = [f"f{i}" for i in range(features.shape[1])]
        layout = Layout.scalars(names, None if labels is None else "label", None if labels is None else labels.dtype)
        block: Block = {"x": np.ascontiguousarray(features, dtype=np.float32)}
        if labels is not None:
            block["y"] = np.ascontiguousarray(labels)
        return cls(block, layout)

    @classmethod
    def from_parquet(cls, files: Sequence[str], layout: Layout) -> ArraySet:
        """Read `files` (paths or URIs): the used columns, each into one host array.
        Data that breaks its schema's promise raises ColumnDataError naming the file."""
        parquet = [open_parquet(f) for f in files]
        # One file's table at a time (the tabular matrix is filled as each is read).
        tables = (p.read(columns=layout.names) for p in parquet)
        try:
            return cls(layout.read(tables, rows=sum(p.metadata.num_rows for p in parquet)), layout)
        except ColumnDataError:
            for file, p in zip(files, parquet, strict=True):
                try:
                    layout.read([p.read(columns=layout.names)])
                except ColumnDataError as exc:
                    raise ColumnDataError(f"{file}: {exc}") from None
            raise

    @property
    def features(self) -> np.ndarray:
        """The float32 feature matrix (tabular scalar features only)."""
        return self.block["x"]  # type: ignore[return-value]

    @property
    def labels(self) -> np.ndarray:
        return self.block["y"]  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return block_nbytes(self.block)

    def __len__(self) -> int:
        return block_rows(self.block)

    def take(self, rows: np.ndarray | slice) -> Batch:
        """Rows as the trainer's batch."""
        if isinstance(rows, slice):
            return self.layout.deliver(slice_rows(self.block, rows.start or 0, rows.stop))
        return self.layout.deliver(take(self.block, rows))

    def train_blocks(self, rank: int, world_size: int, batch_size: int, seed: int, epoch: int,
                     start_step: int = 0, done: Segments = ()) -> Iterator[Block]:
        for rows in train_batch_indices(len(self), rank, world_size, batch_size, seed, epoch, done)[start_step:]:
            yield take(self.block, rows)

    def eval_blocks(self, rank: int, world_size: int, batch_size: int) -> Iterator[Block]:
        block = validation_block(len(self), rank, world_size)
        for rows in iter_blocks(len(self), batch_size, block):
            yield slice_rows(self.block, rows.start, rows.stop)

    def local_rows(self, rank: int, world_size: int, train: bool) -> int:
        if train:
            return len(range(rank, len(self), world_size))
        block = validation_block(len(self), rank, world_size)
        return block.stop - block.start


def load_arrays(data: ResolvedData) -> tuple[ArraySet, ArraySet]:
    """Training and validation columns, in file order, read on the driver, before any
    run is recorded: data that breaks its schema's promise is the user's input (exit 2)."""
    from raysweep.errors import UserInputError

    try:
        return (ArraySet.from_parquet(data.train_files, data.layout),
                ArraySet.from_parquet(data.validation_files, data.layout))
    except ColumnDataError as exc:
        raise UserInputError(str(exc)) from None
