"""Driver side: finding the Parquet files and checking their schema against the spec.

Runs before Ray starts (`raysweep check` starts nothing else); it reads only the
files' footers, local or in an object store (see `raysweep.data.storage`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.config.load import resolve_path
from raysweep.config.spec import DataSpec
from raysweep.data.arrays import numpy_dtype
from raysweep.data.storage import DEADLINE_S, is_object_store, list_parquet, read_footer, within_deadline
from raysweep.errors import UserInputError

FOOTER_THREADS = 16
T = TypeVar("T")


Unit = tuple[int, int, int]
"""(file index, row group index, rows): the smallest piece the stream loader reads."""


@dataclass(frozen=True)
class ResolvedData:
    """The data section after checking: files (absolute paths or URIs), concrete
    columns, and each file's row groups (from the footers)."""

    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]
    features: tuple[str, ...]
    label: str
    num_train_rows: int
    num_validation_rows: int
    train_units: tuple[Unit, ...] = ()
    validation_units: tuple[Unit, ...] = ()
    decoded_bytes: int = 0
    """Memory the used columns take once decoded (float32 features + the label), both splits."""

    @property
    def columns(self) -> list[str]:
        return [*self.features, self.label]


def find_parquet_files(location: str, *, source: str, field: str) -> tuple[str, ...]:
    """A file, a folder (searched recursively) or a glob, local or in an object store
    -> sorted absolute paths or URIs."""
    return tuple(f.uri for f in list_parquet(resolve_path(location), source=source, field=field))


def _guarded(work: Callable[[], T], locations: list[str], message: str) -> T:
    """Object stores get a wall-clock deadline on top of the per-request timeouts."""
    return within_deadline(work, DEADLINE_S, message) if any(map(is_object_store, locations)) else work()


def read_footers(files: Iterable[str]) -> list[pq.FileMetaData]:
    """Every file's footer, read in parallel (an object store answers each in ~10 ms)."""
    with ThreadPoolExecutor(max_workers=FOOTER_THREADS) as pool:
        return list(pool.map(read_footer, files))


def _is_numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_boolean(dtype)


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
    """Find the files and check every file's schema against the spec (footers only).

    Raises UserInputError naming the file and the column on any mismatch.
    """
    train = _guarded(lambda: find_parquet_files(data.train, source=source, field="data.train"),
                     [data.train], f"{source}: data.train: {data.train}")
    validation = _guarded(lambda: find_parquet_files(data.validation, source=source, field="data.validation"),
                          [data.validation], f"{source}: data.validation: {data.validation}")
    footers = _guarded(lambda: read_footers([*train, *validation]), [data.train, data.validation],
                       f"{source}: data: reading the Parquet footers")
    first_schema = footers[0].schema.to_arrow_schema()
    features = expand_features(data.features, first_schema, file=train[0])
    if data.label in features:
        raise UserInputError(f"{source}: data.label: {data.label!r} is also a feature column")
    expected = {name: first_schema.field(name).type for name in [*features, data.label]
                if first_schema.get_field_index(name) >= 0}
    units: dict[str, list[Unit]] = {"train": [], "validation": []}
    splits = (("train", train, footers[:len(train)]), ("validation", validation, footers[len(train):]))
    for split, files, metas in splits:
        for index, (file, meta) in enumerate(zip(files, metas, strict=True)):
            schema = meta.schema.to_arrow_schema()
            check_columns(file, schema, features, "data.features")
            check_columns(file, schema, [data.label], "data.label")
            check_same_types(file, schema, expected, train[0])
            units[split] += [(index, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)
                             if meta.row_group(g).num_rows > 0]
    rows = {split: sum(u[2] for u in found) for split, found in units.items()}
    for split, count in rows.items():
        if count == 0:
            raise UserInputError(f"{source}: data.{split}: the Parquet files hold no rows")
    label_bytes = numpy_dtype(expected[data.label]).itemsize
    decoded = (rows["train"] + rows["validation"]) * (4 * len(features) + label_bytes)
    return ResolvedData(train, validation, features, data.label, rows["train"], rows["validation"],
                        tuple(units["train"]), tuple(units["validation"]), decoded)


def table_to_columns(table: pa.Table, columns: list[str]) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy() for name in columns}
