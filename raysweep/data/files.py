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

import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.config.load import resolve_path
from raysweep.config.spec import DataSpec
from raysweep.data.columns import LENGTHS, ColumnOptions, Kind, Layout, classify
from raysweep.data.storage import DEADLINE_S, is_object_store, list_parquet, read_footer, within_deadline
from raysweep.errors import UserInputError

FOOTER_THREADS = 16
T = TypeVar("T")


Unit = tuple[int, int, int]
"""(file index, row group index, rows): the smallest piece the stream loader reads."""


@dataclass(frozen=True)
class ResolvedData:
    """The data section after checking: files (absolute paths or URIs), the used
    columns and their shapes (`layout`), and each file's row groups (from the footers)."""

    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]
    layout: Layout
    num_train_rows: int
    num_validation_rows: int
    train_units: tuple[Unit, ...] = ()
    validation_units: tuple[Unit, ...] = ()
    decoded_bytes: int = 0
    """Host memory the used columns take once decoded, both splits."""

    @property
    def features(self) -> tuple[str, ...]:
        return self.layout.features

    @property
    def label(self) -> str | None:
        return self.layout.label

    @property
    def columns(self) -> list[str]:
        return self.layout.names


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


def expand_columns(patterns: Iterable[str], schema: pa.Schema, *, file: str, field: str) -> tuple[str, ...]:
    """Column names/patterns -> concrete column names in the file's order."""
    columns: list[str] = []
    for pattern in patterns:
        matched = [n for n in schema.names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise UserInputError(f"{file}: column {pattern!r} ({field}) not found")
        columns.extend(n for n in matched if n not in columns)
    return tuple(columns)


def expand_features(patterns: Iterable[str], schema: pa.Schema, *, file: str) -> tuple[str, ...]:
    return expand_columns(patterns, schema, file=file, field="data.features")


def check_columns(file: str, schema: pa.Schema, columns: Iterable[str], field: str) -> None:
    for name in columns:
        if schema.get_field_index(name) < 0:
            raise UserInputError(f"{file}: column {name!r} ({field}) not found")


def _field_of(data: DataSpec, name: str) -> str:
    if name == data.label:
        return "data.label"
    return "data.columns" if data.columns is not None else "data.features"


def build_layout(data: DataSpec, schema: pa.Schema, file: str, source: str) -> Layout:
    """The used columns, each classified from the first file's schema, and the batch form."""
    named = data.columns is not None
    names = expand_columns(data.columns or data.features or [], schema, file=file,
                           field="data.columns" if named else "data.features")
    if data.label is not None:
        if schema.get_field_index(data.label) < 0:
            raise UserInputError(f"{file}: column {data.label!r} (data.label) not found")
        if data.label in names and not named:
            raise UserInputError(f"{source}: data.label: {data.label!r} is also a feature column")
    used = [*names, *([data.label] if data.label is not None and data.label not in names else [])]
    for name in data.column_options:
        if name not in used:
            raise UserInputError(f"{source}: data.column_options.{name}: not a used column "
                                 f"(used: {', '.join(used)})")
    columns = []
    for name in used:
        spec = data.column_options.get(name)
        options = ColumnOptions() if spec is None else ColumnOptions(
            spec.dtype, spec.pad_value, spec.max_length, tuple(spec.shape) if spec.shape else None,
            tuple(spec.categories) if spec.categories else None)
        columns.append(classify(name, schema.field(name).type, options,
                                f"{file}: column {name!r} ({_field_of(data, name)})"))
    if not named:
        kinds = {c.name: c for c in columns}
        shaped = [n for n in names if kinds[n].kind is not Kind.SCALAR]
        if shaped and (len(names) > 1 or kinds[shaped[0]].kind is not Kind.TENSOR):
            column = kinds[shaped[0]]
            raise UserInputError(
                f"{file}: column {column.name!r} (data.features) is {column.arrow_type}: the tabular shorthand takes "
                "scalar columns or exactly one tensor column; name several or other shapes in data.columns")
        if data.label is not None and kinds[data.label].kind not in (Kind.SCALAR, Kind.CODES, Kind.TENSOR):
            raise UserInputError(
                f"{file}: column {data.label!r} (data.label) is {kinds[data.label].arrow_type}: a tabular label "
                "must be a scalar, tensor or dictionary column; use data.columns for other shapes")
    else:
        clash = sorted({c.name + LENGTHS for c in columns if c.kind is Kind.SEQUENCE} & set(used))
        if clash:
            raise UserInputError(f"{file}: column {clash[0]!r} (data.columns) clashes with the lengths entry "
                                 f"of the list column {clash[0][:-len(LENGTHS)]!r}")
    return Layout(tuple(columns), named=named, features=() if named else names, label=data.label)


def _leaves(arrow_type: pa.DataType) -> int:
    """How many Parquet leaf columns an Arrow type is stored as."""
    if isinstance(arrow_type, pa.ExtensionType):
        return _leaves(arrow_type.storage_type)
    if pa.types.is_struct(arrow_type):
        return sum(_leaves(arrow_type.field(i).type) for i in range(arrow_type.num_fields))
    if pa.types.is_map(arrow_type):
        return _leaves(arrow_type.key_type) + _leaves(arrow_type.item_type)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return _leaves(arrow_type.value_type)
    return 1


def leaf_columns(meta: pq.FileMetaData) -> list[str]:
    """The top-level column each Parquet leaf column belongs to, by leaf index (column
    names may contain dots, so `path_in_schema` alone cannot say)."""
    schema = meta.schema.to_arrow_schema()
    return [field.name for field in schema for _ in range(_leaves(field.type))]


def check_no_nulls(file: str, meta: pq.FileMetaData, layout: Layout, data: DataSpec) -> None:
    """Columns with nulls, from the footer's statistics, for every kind but
    variable-length lists (their statistics count empty rows as nulls too: their
    nulls are found when read)."""
    fixed = {c.name for c in layout.columns if c.kind is not Kind.SEQUENCE and c.options.shape is None}
    if not fixed:
        return
    owners = leaf_columns(meta)
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            name = owners[index]
            stats = chunk.statistics
            if name in fixed and stats is not None and stats.has_null_count and stats.null_count > 0:
                raise UserInputError(f"{file}: column {name!r} ({_field_of(data, name)}) has null values "
                                     f"(row group {group}); raysweep reads no nulls (fill or drop them)")


def _decoded_bytes(layout: Layout, rows: int, metas: Iterable[pq.FileMetaData]) -> int:
    """Fixed-size columns: rows x their size; variable ones: the footers' uncompressed
    sizes plus 8 bytes of offsets per row."""
    fixed = {c.name: c.row_bytes() for c in layout.columns}
    total = rows * sum((4 if layout.matrix and n in layout.features else b) or 0 for n, b in fixed.items())
    variable = {n for n, b in fixed.items() if b is None}
    if variable:
        total += rows * 8 * len(variable)
        for meta in metas:
            owners = leaf_columns(meta)
            for group in range(meta.num_row_groups):
                row_group = meta.row_group(group)
                total += sum(row_group.column(i).total_uncompressed_size for i in range(row_group.num_columns)
                             if owners[i] in variable)
    return total


def check_same_types(file: str, schema: pa.Schema, expected: dict[str, pa.DataType], first: str,
                     data: DataSpec) -> None:
    """Every file gives each used column the type the first file gives it (mixed
    schemas would silently change a feature or the label between files)."""
    for name, dtype in expected.items():
        got = schema.field(name).type
        if got != dtype:
            field = _field_of(data, name)
            raise UserInputError(f"{file}: column {name!r} ({field}) is {got}, but {dtype} in {first}")


def resolve_data(data: DataSpec, source: str) -> ResolvedData:
    """Find the files and check every file's schema against the spec (footers only).

    Raises UserInputError naming the file and the column on any mismatch.
    """
    train = _guarded(lambda: find_parquet_files(data.train, source=source, field="data.train"),
                     [data.train], f"{source}: data.train: {data.train}")
    validation = _guarded(lambda: find_parquet_files(data.validation, source=source, field="data.validation"),
                          [data.validation], f"{source}: data.validation: {data.validation}")
    shared = sorted(set(train) & set(validation))
    if shared:
        raise UserInputError(
            f"{source}: data.validation: {len(shared)} file(s) are in data.train too (e.g. {shared[0]}): "
            f"{data.train} takes in {data.validation}; give the two splits folders that do not overlap")
    footers = _guarded(lambda: read_footers([*train, *validation]), [data.train, data.validation],
                       f"{source}: data: reading the Parquet footers")
    first_schema = footers[0].schema.to_arrow_schema()
    layout = build_layout(data, first_schema, train[0], source)
    expected = {name: first_schema.field(name).type for name in layout.names}
    units: dict[str, list[Unit]] = {"train": [], "validation": []}
    splits = (("train", train, footers[:len(train)]), ("validation", validation, footers[len(train):]))
    for split, files, metas in splits:
        for index, (file, meta) in enumerate(zip(files, metas, strict=True)):
            schema = meta.schema.to_arrow_schema()
            for name in layout.names:
                check_columns(file, schema, [name], _field_of(data, name))
            check_same_types(file, schema, expected, train[0], data)
            check_no_nulls(file, meta, layout, data)
            units[split] += [(index, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)
                             if meta.row_group(g).num_rows > 0]
    rows = {split: sum(u[2] for u in found) for split, found in units.items()}
    for split, count in rows.items():
        if count == 0:
            raise UserInputError(f"{source}: data.{split}: the Parquet files hold no rows")
    decoded = _decoded_bytes(layout, rows["train"] + rows["validation"], footers)
    return ResolvedData(train, validation, layout, rows["train"], rows["validation"],
                        tuple(units["train"]), tuple(units["validation"]), decoded)
