"""Parquet data: finding files, checking their schema, and sharding rows by rank.

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

import fnmatch
import glob
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.errors import UserInputError

if TYPE_CHECKING:
    from raysweep.spec import DataSpec


@dataclass(frozen=True)
class ResolvedData:
    """The data section after checking: absolute files and concrete columns."""

    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]
    features: tuple[str, ...]
    label: str
    num_train_rows: int
    num_validation_rows: int

    @property
    def columns(self) -> list[str]:
        return [*self.features, self.label]


def find_parquet_files(path: str, *, source: str, field: str) -> tuple[str, ...]:
    """A file, a directory (searched recursively) or a glob -> sorted absolute paths."""
    from raysweep.spec import resolve_path  # (lazy: trainers import this module without pydantic)

    path = resolve_path(path)
    candidate = Path(path)
    if candidate.is_file():
        files = [candidate]
    elif candidate.is_dir():
        files = sorted(candidate.rglob("*.parquet"))
    else:
        files = [Path(p) for p in sorted(glob.glob(path, recursive=True)) if Path(p).is_file()]
    if not files:
        raise UserInputError(f"{source}: {field}: no Parquet files at {path!r}")
    return tuple(str(f.resolve()) for f in files)


def _is_numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_boolean(dtype)


def _read_schema(file: str) -> tuple[pa.Schema, int]:
    try:
        meta = pq.read_metadata(file)
    except (pa.ArrowInvalid, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserInputError(f"{file}: not a readable Parquet file: {reason}") from None
    return meta.schema.to_arrow_schema(), meta.num_rows


def expand_features(patterns: Iterable[str], schema: pa.Schema, *, file: str) -> tuple[str, ...]:
    """Feature names/patterns -> concrete column names in the file's order."""
    columns: list[str] = []
    for pattern in patterns:
        matched = [n for n in schema.names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise UserInputError(f"{file}: column {pattern!r} (data.features) not found")
        columns.extend(n for n in matched if n not in columns)
    return tuple(columns)


def check_columns(file: str, schema: pa.Schema, columns: Iterable[str], field: str) -> None:
    for name in columns:
        index = schema.get_field_index(name)
        if index < 0:
            raise UserInputError(f"{file}: column {name!r} ({field}) not found")
        dtype = schema.field(index).type
        if not _is_numeric(dtype):
            raise UserInputError(
                f"{file}: column {name!r} ({field}) must be numeric, got {dtype}"
            )


def check_same_types(file: str, schema: pa.Schema, expected: dict[str, pa.DataType], first: str) -> None:
    """Every file gives each used column the type the first file gives it (mixed
    schemas would silently change a feature or the label between files)."""
    for name, dtype in expected.items():
        got = schema.field(name).type
        if got != dtype:
            field = "data.label" if name == list(expected)[-1] else "data.features"
            raise UserInputError(f"{file}: column {name!r} ({field}) is {got}, but {dtype} in {first}")


def resolve_data(data: DataSpec, source: str) -> ResolvedData:
    """Find the files and check every file's schema against the spec.

    Raises UserInputError naming the file and the column on any mismatch.
    """
    train = find_parquet_files(data.train, source=source, field="data.train")
    validation = find_parquet_files(data.validation, source=source, field="data.validation")
    first_schema, _ = _read_schema(train[0])
    features = expand_features(data.features, first_schema, file=train[0])
    if data.label in features:
        raise UserInputError(f"{source}: data.label: {data.label!r} is also a feature column")
    rows = {"train": 0, "validation": 0}
    expected = {name: first_schema.field(name).type for name in [*features, data.label]
                if first_schema.get_field_index(name) >= 0}
    for split, files in (("train", train), ("validation", validation)):
        for file in files:
            schema, num_rows = _read_schema(file)
            check_columns(file, schema, features, "data.features")
            check_columns(file, schema, [data.label], "data.label")
            check_same_types(file, schema, expected, train[0])
            rows[split] += num_rows
    for split, count in rows.items():
        if count == 0:
            raise UserInputError(f"{source}: data.{split}: the Parquet files hold no rows")
    return ResolvedData(train, validation, features, data.label, rows["train"], rows["validation"])


def table_to_columns(table: pa.Table, columns: list[str]) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy() for name in columns}


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
