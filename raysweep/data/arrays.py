"""A split's rows as batches: the interface both loaders give the trainer's context,
and the memory loader (columns read once on the driver, mapped by every worker)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa
import torch

from raysweep.data.shards import iter_blocks, train_batch_indices, validation_block
from raysweep.data.storage import open_parquet

if TYPE_CHECKING:
    from raysweep.data.files import ResolvedData

Batch = tuple[torch.Tensor, torch.Tensor]


class DataSplit(Protocol):
    """One split (train or validation) as a rank sees it, whichever loader holds it."""

    def __len__(self) -> int: ...

    def train_batches(self, rank: int, world_size: int, batch_size: int, seed: int, epoch: int,
                      start_step: int = 0) -> Iterator[Batch]:
        """This rank's shard of `epoch`, from batch `start_step` on; the same batch count
        on every rank, every row once across ranks."""
        ...

    def eval_batches(self, rank: int, world_size: int, batch_size: int) -> Iterator[Batch]:
        """This rank's block, in order; all blocks cover every row once."""
        ...

    def local_rows(self, rank: int, world_size: int, train: bool) -> int:
        """How many rows this rank gets per epoch (train) or per evaluation."""
        ...


_FLOATS = {"halffloat": "float16", "float": "float32", "double": "float64"}


def numpy_dtype(arrow_type: pa.DataType) -> np.dtype:
    """The numpy dtype of a numeric Arrow type (without pyarrow's pandas-based lookup,
    which imports pandas: about 0.2 s and 40 MB per worker)."""
    if pa.types.is_boolean(arrow_type):
        return np.dtype(np.bool_)
    name = str(arrow_type)
    return np.dtype(_FLOATS.get(name, name))


def column_to_numpy(array: pa.Array) -> np.ndarray:
    """A numeric Arrow array as numpy: a zero-copy view of its data buffer when it has
    no nulls (pyarrow's own to_numpy imports pandas); else pyarrow's conversion."""
    kind = array.type
    if array.null_count == 0 and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        dtype = numpy_dtype(kind)
        return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)
    return array.to_numpy(zero_copy_only=False)


def to_matrix(table: pa.Table | pa.RecordBatch, features: list[str], label: str, out: np.ndarray,
              labels: np.ndarray, offset: int = 0, block_rows: int = 16384) -> int:
    """Write `table`'s feature columns (as float32) into rows of `out` from `offset`, and
    its label into `labels`; returns the next offset. Blocks of `block_rows` rows are
    stacked while still in cache: about 3x faster than stacking whole columns."""
    batches = table.to_batches(max_chunksize=block_rows) if isinstance(table, pa.Table) else [table]
    for batch in batches:
        end = offset + batch.num_rows
        out[offset:end] = np.stack([column_to_numpy(batch.column(name)).astype(np.float32, copy=False)
                                    for name in features], axis=1)
        labels[offset:end] = column_to_numpy(batch.column(label))
        offset = end
    return offset


def label_dtype(schema: pa.Schema, label: str) -> np.dtype:
    return numpy_dtype(schema.field(label).type)


@dataclass(frozen=True)
class ArraySet:
    """The memory loader's split: features as one float32 matrix and the label
    column, in file order."""

    features: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_columns(cls, columns: dict[str, np.ndarray], features: list[str], label: str) -> ArraySet:
        matrix = np.stack([np.asarray(columns[n], dtype=np.float32) for n in features], axis=1)
        return cls(np.ascontiguousarray(matrix), np.ascontiguousarray(columns[label]))

    @classmethod
    def from_parquet(cls, files: list[str], features: list[str], label: str) -> ArraySet:
        """Read `files` (paths or URIs) straight into one preallocated row-major float32 matrix."""
        parquet = [open_parquet(f) for f in files]
        num_rows = sum(p.metadata.num_rows for p in parquet)
        matrix = np.empty((num_rows, len(features)), dtype=np.float32)
        labels = np.empty(num_rows, dtype=label_dtype(parquet[0].schema_arrow, label) if parquet else np.int64)
        offset = 0
        for file in parquet:
            offset = to_matrix(file.read(columns=[*features, label]), features, label, matrix, labels, offset)
        return cls(matrix, labels)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray | slice) -> Batch:
        if isinstance(rows, slice):
            return _tensor(self.features[rows]), _tensor(self.labels[rows])
        # np.take copies into a fresh (writable) array, ~2x faster than fancy indexing.
        return torch.from_numpy(np.take(self.features, rows, axis=0)), torch.from_numpy(np.take(self.labels, rows))

    def train_batches(self, rank: int, world_size: int, batch_size: int, seed: int, epoch: int,
                      start_step: int = 0) -> Iterator[Batch]:
        for rows in train_batch_indices(len(self), rank, world_size, batch_size, seed, epoch)[start_step:]:
            yield self.take(rows)

    def eval_batches(self, rank: int, world_size: int, batch_size: int) -> Iterator[Batch]:
        block = validation_block(len(self), rank, world_size)
        for rows in iter_blocks(len(self), batch_size, block):
            yield self.take(rows)

    def local_rows(self, rank: int, world_size: int, train: bool) -> int:
        if train:
            return len(range(rank, len(self), world_size))
        block = validation_block(len(self), rank, world_size)
        return block.stop - block.start


def _tensor(array: np.ndarray) -> torch.Tensor:
    # Arrays mapped from Ray's object store are read-only; a slice of one is too.
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def load_arrays(data: ResolvedData) -> tuple[ArraySet, ArraySet]:
    """Training and validation columns, in file order, read on the driver."""
    features = list(data.features)
    train, validation = (ArraySet.from_parquet(list(files), features, data.label)
                         for files in (data.train_files, data.validation_files))
    return train, validation
