"""Driver side: finding the Parquet files and checking their schema against the spec.

Runs before Ray starts (`raysweep check` starts nothing else); it reads only the
files' footers.
"""

from __future__ import annotations

import fnmatch
import glob
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.config.load import resolve_path
from raysweep.config.spec import DataSpec
from raysweep.errors import UserInputError


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
