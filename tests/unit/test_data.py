"""Schema checks and row sharding (no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysweep.config.spec import DataSpec
from raysweep.data.files import resolve_data
from raysweep.data.shards import num_train_batches, train_batch_indices, validation_block
from raysweep.errors import UserInputError


def _spec(root, **kw) -> DataSpec:
    fields = {"train": str(root / "train"), "validation": str(root / "validation"),
              "features": ["row_id", "x*"], "label": "label"}
    fields.update(kw)
    return DataSpec(**fields)


def test_resolve_expands_patterns_and_counts_rows(probe_data) -> None:
    data = resolve_data(_spec(probe_data), "s.yaml")
    assert data.features == ("row_id", "x0", "x1")
    assert data.num_train_rows == 203 and data.num_validation_rows == 61
    assert len(data.train_files) == 2


def test_no_parquet_files(tmp_path, probe_data) -> None:
    with pytest.raises(UserInputError, match=r"^s.yaml: data.train: no Parquet files at"):
        resolve_data(_spec(probe_data, train=str(tmp_path / "empty")), "s.yaml")


def test_missing_feature_column_names_file_and_column(probe_data) -> None:
    with pytest.raises(UserInputError, match=r"part-0.parquet: column 'pixels' \(data.features\) not found"):
        resolve_data(_spec(probe_data, features=["pixels"]), "s.yaml")


def test_missing_label_column(probe_data) -> None:
    with pytest.raises(UserInputError, match=r"column 'target' \(data.label\) not found"):
        resolve_data(_spec(probe_data, label="target"), "s.yaml")


def _write(path, table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_unsupported_column_type_names_file_column_type_and_the_supported_ones(tmp_path) -> None:
    table = pa.table({"x0": pa.array([{"a": 1}, {"a": 2}]), "label": [0, 1]})
    _write(tmp_path / "train" / "a.parquet", table)
    _write(tmp_path / "validation" / "a.parquet", table)
    with pytest.raises(UserInputError, match=r"a.parquet: column 'x0' \(data.features\): type struct<a: int64> "
                                             r"is not supported \(supported: integer, float and bool scalars; "):
        resolve_data(_spec(tmp_path, features=["x0"]), "s.yaml")


def test_a_string_feature_in_the_tabular_shorthand_points_to_columns(tmp_path) -> None:
    table = pa.table({"x0": ["a", "b"], "label": [0, 1]})
    _write(tmp_path / "train" / "a.parquet", table)
    _write(tmp_path / "validation" / "a.parquet", table)
    with pytest.raises(UserInputError, match=r"a.parquet: column 'x0' \(data.features\) is string: .* data.columns"):
        resolve_data(_spec(tmp_path, features=["x0"]), "s.yaml")


def test_mixed_schemas_name_the_odd_file(tmp_path) -> None:
    _write(tmp_path / "train" / "a.parquet", pa.table({"x0": [1.0], "label": [0]}))
    _write(tmp_path / "train" / "b.parquet", pa.table({"x0": ["s"], "label": [0]}))
    _write(tmp_path / "validation" / "a.parquet", pa.table({"x0": [1.0], "label": [0]}))
    with pytest.raises(UserInputError, match=r"b.parquet: column 'x0'"):
        resolve_data(_spec(tmp_path, features=["x0"]), "s.yaml")


def test_truncated_file_is_named(tmp_path, probe_data) -> None:
    good = (probe_data / "train" / "part-0.parquet").read_bytes()
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "cut.parquet").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserInputError, match=r"cut.parquet: not a readable Parquet file"):
        resolve_data(_spec(probe_data, train=str(tmp_path / "train")), "s.yaml")


@pytest.mark.parametrize("rows, world, batch", [(203, 2, 16), (10, 3, 4), (7, 7, 2), (64, 2, 32), (65, 2, 32)])
def test_train_shards_are_disjoint_cover_all_and_have_equal_batch_counts(rows, world, batch) -> None:
    for epoch in range(3):
        shards = [train_batch_indices(rows, r, world, batch, seed=1, epoch=epoch) for r in range(world)]
        counts = {len(s) for s in shards}
        assert counts == {num_train_batches(rows, world, batch)}
        assert all(len(b) > 0 for s in shards for b in s)
        seen = np.concatenate([np.concatenate(s) for s in shards])
        assert sorted(seen.tolist()) == list(range(rows))


def test_shuffle_is_seeded_and_changes_per_epoch() -> None:
    a = np.concatenate(train_batch_indices(100, 0, 1, 10, seed=3, epoch=0))
    b = np.concatenate(train_batch_indices(100, 0, 1, 10, seed=3, epoch=0))
    c = np.concatenate(train_batch_indices(100, 0, 1, 10, seed=3, epoch=1))
    assert (a == b).all() and not (a == c).all()


@pytest.mark.parametrize("rows, world", [(61, 2), (5, 3), (3, 3), (100, 7)])
def test_validation_blocks_partition_the_rows(rows, world) -> None:
    covered = [i for r in range(world) for i in range(rows)[validation_block(rows, r, world)]]
    assert covered == list(range(rows))
