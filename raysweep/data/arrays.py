"""The memory loader's data: columns read once on the driver, mapped by every worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq
import torch

if TYPE_CHECKING:
    from raysweep.data.files import ResolvedData

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ArraySet:
    """Features as one float32 matrix and the label column, in file order."""

    features: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_columns(cls, columns: dict[str, np.ndarray], features: list[str], label: str) -> ArraySet:
        matrix = np.stack([np.asarray(columns[n], dtype=np.float32) for n in features], axis=1)
        return cls(np.ascontiguousarray(matrix), np.ascontiguousarray(columns[label]))

    @classmethod
    def from_parquet(cls, files: list[str], features: list[str], label: str, block_rows: int = 16384) -> ArraySet:
        """Read `files` straight into one preallocated row-major float32 matrix.

        Blocks of `block_rows` rows are stacked while they are still in cache: about
        3x faster than stacking whole columns (and half the peak memory).
        """
        num_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        matrix = np.empty((num_rows, len(features)), dtype=np.float32)
        labels: np.ndarray | None = None
        offset = 0
        for path in files:
            table = pq.read_table(path, columns=[*features, label])
            if labels is None:
                labels = np.empty(num_rows, dtype=table.schema.field(label).type.to_pandas_dtype())
            for batch in table.to_batches(max_chunksize=block_rows):
                end = offset + batch.num_rows
                matrix[offset:end] = np.stack(
                    [batch.column(i).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
                     for i in range(len(features))], axis=1)
                labels[offset:end] = batch.column(len(features)).to_numpy(zero_copy_only=False)
                offset = end
        if labels is None:
            labels = np.empty(0, dtype=np.int64)
        return cls(matrix, labels)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray | slice) -> Batch:
        if isinstance(rows, slice):
            return _tensor(self.features[rows]), _tensor(self.labels[rows])
        # np.take copies into a fresh (writable) array, ~2x faster than fancy indexing.
        return torch.from_numpy(np.take(self.features, rows, axis=0)), torch.from_numpy(np.take(self.labels, rows))


def _tensor(array: np.ndarray) -> torch.Tensor:
    # Arrays mapped from Ray's object store are read-only; a slice of one is too.
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def load_arrays(data: ResolvedData) -> tuple[ArraySet, ArraySet]:
    """Training and validation columns, in file order, read on the driver."""
    features = list(data.features)
    train, validation = (ArraySet.from_parquet(list(files), features, data.label)
                         for files in (data.train_files, data.validation_files))
    return train, validation
