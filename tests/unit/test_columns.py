"""Column kinds end to end (no Ray): Parquet files -> both loaders -> the trainer's
batches, the checks at `raysweep check` time, the data errors only a read finds,
the trainer's transform, and `Ragged`'s host-side operations."""

from __future__ import annotations

import re
import sys
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import pytest
import torch

from raysweep.config.spec import DataSpec, Spec
from raysweep.data.arrays import ArraySet
from raysweep.data.columns import ColumnDataError, Ragged, block_rows, concat, slice_rows, take
from raysweep.data.files import resolve_data
from raysweep.data.stream import StreamSettings, StreamSource, StreamSplit
from raysweep.driver.preflight import check_trainer
from raysweep.errors import UserInputError
from raysweep.worker.context import TrainContext, TransformError, transform_rng
from raysweep.worker.feed import FeedSettings

NUM_ROWS = 53
FILES = 3
ROW_GROUP = 7
CATS = ["cat", "dog", "emu", "fox", "gnu"]
PAD = -7
MAX_LENGTH = 4
WORLDS = (1, 2)
LOADERS = ("memory", "stream")


# -- the data: every value a function of the row id --------------------------------------

def img_of(i: int) -> np.ndarray:
    return ((i * 7 + np.arange(64)) % 256).astype(np.uint8).reshape(8, 8)


def timg_of(i: int) -> np.ndarray:
    return ((i * 3 + 5 * np.arange(64)) % 256).astype(np.uint8).reshape(8, 8)


def seq_of(i: int) -> list[int]:
    return [i * 100 + k for k in range(i % 7)]  # lengths 0..6: empty rows too


def raw_of(i: int) -> bytes:
    return bytes([i % 256, 0, 255]) * (i % 3)  # b"" every third row


def txt_of(i: int) -> str:
    return f"t{i}-é" * (i % 2 + 1)


def cat_of(i: int) -> int:
    return (i * 3) % len(CATS)


def kinds_table(ids: np.ndarray) -> pa.Table:
    n = len(ids)
    img_values = np.concatenate([img_of(int(i)).ravel() for i in ids]) if n else np.zeros(0, np.uint8)
    timg_values = np.concatenate([timg_of(int(i)).ravel() for i in ids]) if n else np.zeros(0, np.uint8)
    img = pa.FixedSizeListArray.from_arrays(
        pa.FixedSizeListArray.from_arrays(pa.array(img_values, pa.uint8()), 8), 8)
    timg = pa.ExtensionArray.from_storage(
        pa.fixed_shape_tensor(pa.uint8(), [8, 8]),
        pa.FixedSizeListArray.from_arrays(pa.array(timg_values, pa.uint8()), 64))
    cat = pa.DictionaryArray.from_arrays(pa.array([cat_of(int(i)) for i in ids], pa.int32()), pa.array(CATS))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "img": img,
        "timg": timg,
        "seq": pa.array([seq_of(int(i)) for i in ids], pa.list_(pa.int32())),
        "raw": pa.array([raw_of(int(i)) for i in ids], pa.binary()),
        "txt": pa.array([txt_of(int(i)) for i in ids], pa.string()),
        "cat": cat,
        "small": pa.array(ids % 100, pa.int16()),
        "flag": pa.array(ids % 2 == 0, pa.bool_()),
        "score": pa.array(ids / 4.0, pa.float64()),
        "a": pa.array(ids * 2.0, pa.float64()),
        "b": pa.array(ids % 5, pa.int32()),
        "y": pa.array(ids % 3, pa.int64()),
    })


def write_kinds(root, num_rows: int = NUM_ROWS, files: int = FILES, row_group_size: int = ROW_GROUP):
    """Row ids 0..n-1 over `files` files of small row groups (train), and a
    validation folder of the same rows."""
    for split in ("train", "validation"):
        (root / split).mkdir(parents=True)
        for k, part in enumerate(np.array_split(np.arange(num_rows), files)):
            pq.write_table(kinds_table(part), root / split / f"part-{k}.parquet", row_group_size=row_group_size)
    return root


@pytest.fixture(scope="module")
def kinds_root(tmp_path_factory):
    return write_kinds(tmp_path_factory.mktemp("kinds"))


NAMED = ["id", "img", "timg", "seq", "raw", "txt", "cat", "small", "flag", "score"]
NAMED_OPTIONS = {"seq": {"pad_value": PAD, "max_length": MAX_LENGTH}, "cat": {"categories": CATS}}


def spec(root, **fields) -> DataSpec:
    return DataSpec(**{"train": str(root / "train"), "validation": str(root / "validation"), **fields})


def loaders(data):
    """(memory, stream) train splits of resolved data; the stream one reads small
    windows, so batches cross row groups and files."""
    memory = ArraySet.from_parquet(data.train_files, data.layout)
    stream = StreamSplit(StreamSource(data.train_files, data.train_units, data.layout),
                         StreamSettings(window_rows=16, prefetch_windows=1, read_threads=2))
    return {"memory": memory, "stream": stream}


def epoch_batches(split, world: int, batch_size: int = 10, seed: int = 0, epoch: int = 0):
    return [list(split.train_batches(rank, world, batch_size, seed, epoch)) for rank in range(world)]


def row_records(batch) -> list[tuple]:
    """Each row of a named batch as a hashable record (to compare loaders)."""
    rows = []
    for r in range(len(batch["id"])):
        rows.append((int(batch["id"][r]), batch["img"][r].numpy().tobytes(), batch["timg"][r].numpy().tobytes(),
                     tuple(batch["seq"][r, :int(batch["seq_lengths"][r])].tolist()), batch["raw"][r],
                     batch["txt"][r], int(batch["cat"][r]), int(batch["small"][r]), bool(batch["flag"][r]),
                     float(batch["score"][r])))
    return rows


def assert_named_batch(batch) -> None:
    """Every entry of a named batch in its promised form, with the written values."""
    assert set(batch) == {*NAMED, "seq_lengths"}
    ids = batch["id"].numpy()
    n = len(ids)
    assert batch["id"].dtype == torch.int64
    for name, of in (("img", img_of), ("timg", timg_of)):
        assert batch[name].dtype == torch.uint8 and tuple(batch[name].shape) == (n, 8, 8)
        assert all((batch[name][r].numpy() == of(int(i))).all() for r, i in enumerate(ids))
    # sequence: padded to the batch's longest (cut at max_length), lengths beside it
    lengths = np.array([min(len(seq_of(int(i))), MAX_LENGTH) for i in ids])
    assert batch["seq"].dtype == torch.int32 and batch["seq_lengths"].dtype == torch.int64
    assert tuple(batch["seq"].shape) == (n, int(lengths.max()))
    assert batch["seq_lengths"].tolist() == lengths.tolist()
    for r, i in enumerate(ids):
        row = batch["seq"][r].tolist()
        assert row[:lengths[r]] == seq_of(int(i))[:MAX_LENGTH]
        assert row[lengths[r]:] == [PAD] * (len(row) - lengths[r])
    assert isinstance(batch["raw"], list) and all(isinstance(v, bytes) for v in batch["raw"])
    assert batch["raw"] == [raw_of(int(i)) for i in ids]
    assert isinstance(batch["txt"], list) and batch["txt"] == [txt_of(int(i)) for i in ids]
    assert batch["cat"].dtype == torch.int32 and batch["cat"].tolist() == [cat_of(int(i)) for i in ids]
    assert batch["small"].dtype == torch.int16 and batch["small"].tolist() == (ids % 100).tolist()
    assert batch["flag"].dtype == torch.bool and batch["flag"].tolist() == (ids % 2 == 0).tolist()
    assert batch["score"].dtype == torch.float64 and batch["score"].tolist() == (ids / 4.0).tolist()


# -- 1. every kind through both loaders ----------------------------------------------------

def test_the_layout_classifies_every_kind(kinds_root) -> None:
    data = resolve_data(spec(kinds_root, columns=NAMED, column_options=NAMED_OPTIONS), "s.yaml")
    kinds = {c.name: (c.kind.value, c.dtype, c.shape) for c in data.layout.columns}
    assert kinds == {
        "id": ("scalar", "int64", ()), "img": ("tensor", "uint8", (8, 8)), "timg": ("tensor", "uint8", (8, 8)),
        "seq": ("sequence", "int32", ()), "raw": ("bytes", None, ()), "txt": ("text", None, ()),
        "cat": ("codes", "int32", ()), "small": ("scalar", "int16", ()), "flag": ("scalar", "bool", ()),
        "score": ("scalar", "float64", ()),
    }
    assert len(data.train_units) > FILES, "several row groups per file"


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("loader", LOADERS)
def test_named_batches_deliver_every_kind_with_the_written_values_every_row_once(kinds_root, loader, world) -> None:
    data = resolve_data(spec(kinds_root, columns=NAMED, column_options=NAMED_OPTIONS), "s.yaml")
    split = loaders(data)[loader]
    ranks = epoch_batches(split, world)
    assert len({len(batches) for batches in ranks}) == 1, "the same batch count on every rank"
    seen = []
    for batches in ranks:
        for batch in batches:
            assert_named_batch(batch)
            seen += batch["id"].tolist()
    assert sorted(seen) == list(range(NUM_ROWS))


@pytest.mark.parametrize("world", WORLDS)
def test_both_loaders_give_the_same_rows(kinds_root, world) -> None:
    data = resolve_data(spec(kinds_root, columns=NAMED, column_options=NAMED_OPTIONS), "s.yaml")
    found = {}
    for name, split in loaders(data).items():
        found[name] = sorted(r for batches in epoch_batches(split, world, batch_size=8, epoch=1)
                             for batch in batches for r in row_records(batch))
    assert len(found["memory"]) == NUM_ROWS
    assert found["memory"] == found["stream"]


@pytest.mark.parametrize("loader", LOADERS)
def test_validation_batches_cover_every_row_once_in_order(kinds_root, loader) -> None:
    data = resolve_data(spec(kinds_root, columns=NAMED, column_options=NAMED_OPTIONS), "s.yaml")
    split = loaders(data)[loader]
    ids = []
    for rank in range(2):
        for batch in split.eval_batches(rank, 2, 9):
            assert_named_batch(batch)
            ids += batch["id"].tolist()
    assert ids == list(range(NUM_ROWS))


@pytest.mark.parametrize("loader", LOADERS)
def test_a_sequence_takes_its_dtype_option_and_a_list_with_a_shape_is_a_tensor(tmp_path, loader) -> None:
    ids = np.arange(20)
    table = pa.table({"id": ids, "seq": pa.array([[int(i)] * int(i % 4) for i in ids], pa.list_(pa.int64())),
                      "grid": pa.array([[float(i), i + 0.5, -float(i), 2.0] for i in ids], pa.list_(pa.float32()))})
    for split in ("train", "validation"):
        (tmp_path / split).mkdir()
        pq.write_table(table, tmp_path / split / "a.parquet", row_group_size=6)
    options = {"seq": {"dtype": "int16", "pad_value": -1}, "grid": {"shape": [2, 2]}}
    data = resolve_data(spec(tmp_path, columns=["id", "seq", "grid"], column_options=options), "s.yaml")
    split = loaders(data)[loader]
    seen = []
    for batch in split.train_batches(0, 1, 7, 0, 0):
        assert batch["seq"].dtype == torch.int16 and batch["grid"].dtype == torch.float32
        assert tuple(batch["grid"].shape) == (len(batch["id"]), 2, 2)
        for r, i in enumerate(batch["id"].tolist()):
            assert batch["grid"][r].tolist() == [[i, i + 0.5], [-i, 2.0]]
            n = i % 4
            assert batch["seq"][r].tolist() == [i] * n + [-1] * (batch["seq"].shape[1] - n)
        seen += batch["id"].tolist()
    assert sorted(seen) == list(range(20))


def write_split_files(root, tables: list[pa.Table]) -> None:
    for split in ("train", "validation"):
        (root / split).mkdir(parents=True)
        for k, table in enumerate(tables):
            pq.write_table(table, root / split / f"part-{k}.parquet")


def test_dictionary_codes_mean_one_value_whichever_file_and_loader(tmp_path) -> None:
    # The same type (dictionary<values=string, indices=int32>) in both files, but "dog"
    # is index 1 in the first file's dictionary, 0 in the second's: codes come from
    # column_options.categories, the same in every file and loader.
    first = pa.table({"id": [0, 1, 2], "cat": pa.array(["cat", "dog", "cat"]).dictionary_encode()})
    second = pa.table({"id": [3, 4, 5], "cat": pa.array(["dog", "emu", "dog"]).dictionary_encode()})
    write_split_files(tmp_path, [first, second])
    with pytest.raises(UserInputError, match=r"column 'cat' \(data.columns\): a dictionary column needs "
                                             r"column_options.cat.categories"):
        resolve_data(spec(tmp_path, columns=["id", "cat"]), "s.yaml")
    data = resolve_data(spec(tmp_path, columns=["id", "cat"],
                             column_options={"cat": {"categories": ["emu", "dog", "cat"]}}), "s.yaml")
    codes = {}
    for name, split in loaders(data).items():
        stream_small = StreamSplit(split.source, StreamSettings(window_rows=3)) if name == "stream" else split
        codes[name] = {i: c for batch in stream_small.eval_batches(0, 1, 3)
                       for i, c in zip(batch["id"].tolist(), batch["cat"].tolist(), strict=True)}
    for found in codes.values():
        assert found == {0: 2, 1: 1, 2: 2, 3: 1, 4: 0, 5: 1}
    assert codes["memory"] == codes["stream"]


def test_a_dictionary_value_not_in_the_categories_fails_the_read_naming_it(tmp_path) -> None:
    table = pa.table({"id": [0, 1], "cat": pa.array(["cat", "yak"]).dictionary_encode()})
    write_split_files(tmp_path, [table])
    data = resolve_data(spec(tmp_path, columns=["id", "cat"], column_options={"cat": {"categories": ["cat"]}}),
                        "s.yaml")
    with pytest.raises(ColumnDataError,
                       match=r"part-0\.parquet: column 'cat': value 'yak' is not in column_options.categories$"):
        ArraySet.from_parquet(data.train_files, data.layout)


@pytest.mark.parametrize("loader", LOADERS)
def test_large_list_binary_and_string_columns_behave_as_their_small_kinds(tmp_path, loader) -> None:
    ids = np.arange(12)
    write_split_files(tmp_path, [pa.table({
        "id": ids,
        "seq": pa.array([[float(i)] * int(i % 3) for i in ids], pa.large_list(pa.float32())),
        "raw": pa.array([raw_of(int(i)) for i in ids], pa.large_binary()),
        "txt": pa.array([txt_of(int(i)) for i in ids], pa.large_string()),
    })])
    data = resolve_data(spec(tmp_path, columns=["id", "seq", "raw", "txt"]), "s.yaml")
    assert [c.kind.value for c in data.layout.columns] == ["scalar", "sequence", "bytes", "text"]
    seen = []
    for batch in loaders(data)[loader].train_batches(0, 1, 5, 0, 0):
        for r, i in enumerate(batch["id"].tolist()):
            n = int(batch["seq_lengths"][r])
            assert n == i % 3 and batch["seq"][r, :n].tolist() == [float(i)] * n
            assert batch["raw"][r] == raw_of(i) and batch["txt"][r] == txt_of(i)
        seen += batch["id"].tolist()
    assert sorted(seen) == list(range(12))


@pytest.mark.parametrize("loader", LOADERS)
def test_a_label_with_named_columns_joins_the_dict(kinds_root, loader) -> None:
    data = resolve_data(spec(kinds_root, columns=["id", "img"], label="y"), "s.yaml")
    for batch in loaders(data)[loader].train_batches(0, 1, 10, 0, 0):
        assert set(batch) == {"id", "img", "y"}
        assert batch["y"].dtype == torch.int64 and (batch["y"] == batch["id"] % 3).all()


@pytest.mark.parametrize("loader", LOADERS)
def test_a_resume_at_step_s_gives_the_same_named_batches(kinds_root, loader) -> None:
    data = resolve_data(spec(kinds_root, columns=NAMED, column_options=NAMED_OPTIONS), "s.yaml")
    split = loaders(data)[loader]
    full = [row_records(b) for b in split.train_batches(1, 2, 6, 3, 2)]
    for start in (1, 3):
        resumed = [row_records(b) for b in split.train_batches(1, 2, 6, 3, 2, start_step=start)]
        assert resumed == full[start:]


def test_a_permuted_fixed_shape_tensor_is_delivered_in_its_logical_shape_or_refused(tmp_path) -> None:
    # A column-major image: pyarrow stores it with shape [3, 2] and permutation [1, 0];
    # its rows are [2, 3] arrays (what FixedShapeTensorArray.to_numpy_ndarray gives).
    x = np.arange(24, dtype=np.uint8).reshape(4, 2, 3)
    column = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(x.transpose(0, 2, 1)).transpose(0, 2, 1))
    assert column.type.permutation == [1, 0] and column.to_numpy_ndarray().tolist() == x.tolist()
    write_split_files(tmp_path, [pa.table({"t": column})])
    try:
        data = resolve_data(spec(tmp_path, columns=["t"]), "s.yaml")
    except UserInputError as exc:  # refusing it at check time keeps the promise too
        assert "'t'" in str(exc) and "\n" not in str(exc)
        return
    for loader in LOADERS:
        batch = next(loaders(data)[loader].eval_batches(0, 1, 4))
        assert batch["t"].tolist() == x.tolist(), loader


# -- 2. the tabular shorthand --------------------------------------------------------------

@pytest.mark.parametrize("loader", LOADERS)
def test_tabular_scalar_features_give_a_float32_matrix_and_the_label(kinds_root, loader) -> None:
    data = resolve_data(spec(kinds_root, features=["a", "b"], label="y"), "s.yaml")
    split = loaders(data)[loader]
    seen = []
    for batch in split.train_batches(0, 1, 10, 0, 0):
        x, y = batch
        assert x.dtype == torch.float32 and x.shape[1] == 2 and y.dtype == torch.int64
        ids = (x[:, 0] / 2).long()
        assert (x[:, 1] == (ids % 5).float()).all() and (y == ids % 3).all()
        seen += ids.tolist()
    assert sorted(seen) == list(range(NUM_ROWS))


@pytest.mark.parametrize("feature", ["img", "timg"])
@pytest.mark.parametrize("loader", LOADERS)
def test_tabular_one_tensor_feature_is_x_as_is_in_its_own_dtype(kinds_root, loader, feature) -> None:
    data = resolve_data(spec(kinds_root, features=[feature], label="y"), "s.yaml")
    of = img_of if feature == "img" else timg_of
    total = 0
    for batch in loaders(data)[loader].train_batches(0, 1, 10, 0, 0):
        x, y = batch
        assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == (8, 8) and y.dtype == torch.int64
        # The label is id % 3; find each row's id from its image.
        firsts = x[:, 0, 0].numpy().astype(int)
        for r in range(len(y)):
            assert (x[r].numpy() == of(_id_from_first(firsts[r], of, int(y[r])))).all()
        total += len(y)
    assert total == NUM_ROWS


def _id_from_first(first: int, of, label: int) -> int:
    matches = [i for i in range(NUM_ROWS) if int(of(i)[0, 0]) == first and i % 3 == label]
    assert len(matches) == 1
    return matches[0]


@pytest.mark.parametrize("features", [["a", "b"], ["img"]])
@pytest.mark.parametrize("loader", LOADERS)
def test_tabular_without_a_label_gives_x_alone(kinds_root, loader, features) -> None:
    data = resolve_data(spec(kinds_root, features=features), "s.yaml")
    split = loaders(data)[loader]
    batches = list(split.train_batches(0, 1, 10, 0, 0))
    assert all(isinstance(b, torch.Tensor) for b in batches)
    assert sum(len(b) for b in batches) == NUM_ROWS
    assert batches[0].dtype == (torch.float32 if features == ["a", "b"] else torch.uint8)
    x = next(split.eval_batches(0, 1, 100))
    assert isinstance(x, torch.Tensor) and len(x) == NUM_ROWS


def test_tabular_scalar_features_with_a_dictionary_label_give_its_codes(kinds_root) -> None:
    data = resolve_data(spec(kinds_root, features=["a", "b"], label="cat",
                             column_options={"cat": {"categories": CATS}}), "s.yaml")
    arrays = ArraySet.from_parquet(data.train_files, data.layout)
    x, y = arrays.take(slice(0, NUM_ROWS))
    ids = (x[:, 0] / 2).long()
    assert y.tolist() == [cat_of(int(i)) for i in ids]


def test_tabular_scalar_features_with_a_tensor_label_give_it_as_is(kinds_root) -> None:
    data = resolve_data(spec(kinds_root, features=["a", "b"], label="img"), "s.yaml")
    arrays = ArraySet.from_parquet(data.train_files, data.layout)
    x, y = arrays.take(slice(0, NUM_ROWS))
    assert y.dtype == torch.uint8 and tuple(y.shape) == (NUM_ROWS, 8, 8)
    assert all((y[r].numpy() == img_of(int(x[r, 0]) // 2)).all() for r in range(NUM_ROWS))


# -- 3. memory: a column's own dtype on the host --------------------------------------------

@pytest.mark.parametrize("column", ["img", "timg"])
def test_the_memory_loader_holds_a_uint8_image_in_64_bytes_a_row(kinds_root, column) -> None:
    data = resolve_data(spec(kinds_root, columns=[column]), "s.yaml")
    arrays = ArraySet.from_parquet(data.train_files, data.layout)
    assert arrays.block[column].dtype == np.uint8 and arrays.block[column].shape == (NUM_ROWS, 8, 8)
    assert arrays.nbytes == NUM_ROWS * 64
    assert data.decoded_bytes == 2 * NUM_ROWS * 64  # train and validation
    assert data.layout.row_bytes() == 64


# -- 4. bad input at check time -------------------------------------------------------------

def check_fails(root, table: pa.Table, pattern: str, **fields) -> str:
    """resolve_data on `table` (train and validation) fails with one line matching `pattern`."""
    if not (root / "train").exists():
        write_split_files(root, [table])
    with pytest.raises(UserInputError) as caught:
        resolve_data(spec(root, **fields), "s.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(pattern, message), message
    return message


def test_an_unsupported_type_names_file_column_and_the_supported_types(tmp_path) -> None:
    table = pa.table({"id": [1, 2], "when": pa.array([0, 1], pa.timestamp("s")),
                      "rec": pa.array([{"a": 1}, {"a": 2}])})
    for column in ("when", "rec"):
        message = check_fails(tmp_path, table, rf"part-0\.parquet: column '{column}' \(data\.columns\): type .* "
                                               r"is not supported \(supported: ", columns=["id", column])
        assert "fixed_size_list" in message and "binary" in message and "dictionary" in message


def test_a_list_of_strings_is_refused_naming_its_value_type(tmp_path) -> None:
    table = pa.table({"tags": pa.array([["a"], ["b", "c"]])})
    check_fails(tmp_path, table, r"part-0\.parquet: column 'tags' \(data\.columns\): type list<\w+: string>: "
                                 r"the values must be numbers", columns=["tags"])


@pytest.mark.parametrize("column,array", [
    ("img", pa.array([[1, 2, 3, 4], None, [5, 6, 7, 8]], pa.list_(pa.uint8(), 4))),
    ("img", pa.array([[1, 2, 3, 4], [5, None, 7, 8], [1, 1, 1, 1]], pa.list_(pa.uint8(), 4))),
    ("timg", pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.uint8(), [2, 2]),
                                            pa.array([[1, 2, 3, 4], None, [5, 6, 7, 8]], pa.list_(pa.uint8(), 4)))),
    ("raw", pa.array([b"a", None, b"c"], pa.binary())),
    ("txt", pa.array(["a", "b", None], pa.string())),
], ids=["fixed_size_list-null-row", "fixed_size_list-null-value", "fixed_shape_tensor", "binary", "string"])
def test_nulls_in_a_tensor_or_bytes_column_fail_the_check_from_the_footer(tmp_path, column, array) -> None:
    table = pa.table({"id": [0, 1, 2], column: array})
    check_fails(tmp_path, table, rf"part-0\.parquet: column '{column}' \(data\.columns\) has null values "
                                 r"\(row group 0\)", columns=["id", column])


def test_nulls_in_another_column_whose_name_has_a_dot_do_not_fail_a_clean_column(tmp_path) -> None:
    write_split_files(tmp_path, [pa.table({"img": pa.array([[1, 2], [3, 4]], pa.list_(pa.uint8(), 2)),
                                           "img.v1": pa.array([b"a", None])})])
    data = resolve_data(spec(tmp_path, columns=["img"]), "s.yaml")
    assert data.num_train_rows == 2


@pytest.mark.parametrize("value_type,options,shown", [
    (pa.int32(), {"dtype": "uint8", "pad_value": -1}, r"-1\.0 does not fit the column's dtype uint8"),
    (pa.int32(), {"pad_value": 0.5}, r"0\.5 does not fit the column's dtype int32"),
    (pa.uint8(), {"pad_value": 300}, r"300\.0 does not fit the column's dtype uint8"),
    (pa.float16(), {"pad_value": 1e6}, r"1000000\.0 does not fit the column's dtype float16"),
    (pa.int64(), {"dtype": "bool", "pad_value": 2}, r"2\.0 does not fit the column's dtype bool"),
])
def test_a_pad_value_that_does_not_fit_the_dtype_is_refused(tmp_path, value_type, options, shown) -> None:
    table = pa.table({"seq": pa.array([[1], [2, 3]], pa.list_(value_type))})
    check_fails(tmp_path, table, r"part-0\.parquet: column 'seq' \(data\.columns\): column_options\.pad_value: "
                + shown, columns=["seq"], column_options={"seq": options})


def test_a_pad_value_that_fits_is_taken(tmp_path) -> None:
    write_split_files(tmp_path, [pa.table({"seq": pa.array([[1], [2, 3]], pa.list_(pa.int32()))})])
    data = resolve_data(spec(tmp_path, columns=["seq"], column_options={"seq": {"dtype": "uint8", "pad_value": 255}}),
                        "s.yaml")
    batch = next(ArraySet.from_parquet(data.train_files, data.layout).eval_batches(0, 1, 2))
    assert batch["seq"].dtype == torch.uint8 and batch["seq"].tolist() == [[1, 255], [2, 3]]


def test_column_options_for_a_column_not_used_are_refused(tmp_path) -> None:
    table = pa.table({"id": [1, 2], "seq": pa.array([[1], [2]])})
    check_fails(tmp_path, table, r"^s\.yaml: data\.column_options\.seq: not a used column \(used: id\)$",
                columns=["id"], column_options={"seq": {"pad_value": 1}})


def test_a_shape_option_on_a_fixed_size_list_is_refused(tmp_path) -> None:
    table = pa.table({"img": pa.array([[1, 2, 3, 4]], pa.list_(pa.uint8(), 4))})
    check_fails(tmp_path, table, r"part-0\.parquet: column 'img' \(data\.columns\): column_options\.shape: the type "
                                 r"fixed_size_list<\w+: uint8>\[4\] fixes the shape already",
                columns=["img"], column_options={"img": {"shape": [2, 2]}})


@pytest.mark.parametrize("column,options,why", [
    ("img", {"pad_value": 1}, "pad_value and max_length are for variable-length list columns"),
    ("id", {"max_length": 3}, "pad_value and max_length are for variable-length list columns"),
    ("id", {"shape": [1]}, r"column_options\.shape is for list columns"),
    ("raw", {"dtype": "uint8"}, "takes no dtype, pad_value, max_length or shape options"),
])
def test_options_that_do_not_fit_the_kind_are_refused(tmp_path, column, options, why) -> None:
    table = pa.table({"id": [1, 2], "img": pa.array([[1, 2], [3, 4]], pa.list_(pa.uint8(), 2)),
                      "raw": pa.array([b"a", b"b"])})
    check_fails(tmp_path, table, rf"part-0\.parquet: column '{column}' \(data\.columns\): .*{why}",
                columns=[column], column_options={column: options})


def test_two_tensor_columns_in_the_tabular_shorthand_are_refused(kinds_root) -> None:
    check_fails(kinds_root, None, r"part-0\.parquet: column 'img' \(data\.features\) is fixed_size_list.*: the "
                                  r"tabular shorthand takes scalar columns or exactly one tensor column",
                features=["img", "timg"], label="y")


@pytest.mark.parametrize("features", [["a", "img"], ["seq"], ["raw"], ["txt"]])
def test_a_non_scalar_feature_beside_others_or_not_a_tensor_is_refused_in_the_shorthand(kinds_root, features) -> None:
    shaped = [f for f in features if f != "a"][0]
    check_fails(kinds_root, None, rf"part-0\.parquet: column '{shaped}' \(data\.features\) is .*data\.columns",
                features=features)


def test_a_sequence_label_in_the_tabular_shorthand_is_refused(kinds_root) -> None:
    check_fails(kinds_root, None, r"part-0\.parquet: column 'seq' \(data\.label\) is list<\w+: int32>: a tabular "
                                  r"label must be a scalar, tensor or dictionary column", features=["a"], label="seq")


def test_a_column_named_like_a_lengths_entry_is_refused(tmp_path) -> None:
    table = pa.table({"seq": pa.array([[1], [2]]), "seq_lengths": [1, 1]})
    check_fails(tmp_path, table, r"part-0\.parquet: column 'seq_lengths' \(data\.columns\) clashes with the lengths "
                                 r"entry of the list column 'seq'", columns=["seq*"])


@pytest.mark.parametrize("forms", [{"features": ["a"], "columns": ["a"]}, {}])
def test_both_features_and_columns_or_neither_is_a_validation_error(tmp_path, forms) -> None:
    with pytest.raises(pydantic.ValidationError, match="give either features .* or columns .*not both and not neither"):
        DataSpec(train=str(tmp_path), validation=str(tmp_path), **forms)


# -- 5. bad data only a read finds ------------------------------------------------------------

def read_all(data, loader: str) -> None:
    if loader == "memory":
        ArraySet.from_parquet(data.train_files, data.layout)
    else:
        list(loaders(data)["stream"].train_batches(0, 1, 4, 0, 0))


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("seq", [
    pa.array([[1, 2], [], None, [3]], pa.list_(pa.int32())),
    pa.array([[1, 2], [], [None, 4], [3]], pa.list_(pa.int32())),
], ids=["null-row", "null-value"])
def test_nulls_in_a_list_column_fail_the_read_naming_the_column(tmp_path, loader, seq) -> None:
    write_split_files(tmp_path, [pa.table({"id": [0, 1, 2, 3], "seq": seq})])
    data = resolve_data(spec(tmp_path, columns=["id", "seq"]), "s.yaml")  # list nulls are not in the footer
    with pytest.raises(ColumnDataError, match=r"part-0\.parquet: (row group \d+: )?column 'seq' "
                                              r"\(list<\w+: int32>\) has 1 null row\(s\); ") as caught:
        read_all(data, loader)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("loader", LOADERS)
def test_nulls_in_a_feature_of_files_without_statistics_fail_the_read_naming_file_and_column(tmp_path, loader):
    """`check` finds nulls in the footer's statistics; a file written without them gets
    past it, and the read refuses the nulls (else they become NaN in the feature matrix
    and the run fails later on a "non-finite metric")."""
    table = pa.table({"x0": pa.array([0.5, None, 1.5, 2.0], pa.float32()), "x1": [1.0, 2.0, 3.0, 4.0],
                      "label": [0, 1, 0, 1]})
    for split in ("train", "validation"):
        (tmp_path / split).mkdir()
        pq.write_table(table, tmp_path / split / "part-0.parquet", write_statistics=False)
    data = resolve_data(spec(tmp_path, features=["x0", "x1"], label="label"), "s.yaml")  # (passes: no statistics)
    with pytest.raises(ColumnDataError, match=r"part-0\.parquet: (row group \d+: )?column 'x0' \(float\) has 1 "
                                              r"null row\(s\); raysweep reads no nulls") as caught:
        read_all(data, loader)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("loader", LOADERS)
def test_a_ragged_row_in_a_list_read_with_a_shape_fails_naming_the_column(tmp_path, loader) -> None:
    grid = pa.array([[1.0, 2, 3, 4], [1.0, 2, 3], [1.0, 2, 3, 4]], pa.list_(pa.float32()))
    write_split_files(tmp_path, [pa.table({"id": [0, 1, 2], "grid": grid})])
    data = resolve_data(spec(tmp_path, columns=["id", "grid"], column_options={"grid": {"shape": [2, 2]}}), "s.yaml")
    with pytest.raises(ColumnDataError, match=r"part-0\.parquet: (row group \d+: )?column 'grid': row \d+ has 3 "
                                              r"values; column_options\.shape \[2, 2\] needs 4$"):
        read_all(data, loader)


# -- 6. the trainer's transform ---------------------------------------------------------------

@pytest.fixture(scope="module")
def named_arrays(kinds_root):
    data = resolve_data(spec(kinds_root, columns=["id", "img", "raw"]), "s.yaml")
    train = ArraySet.from_parquet(data.train_files, data.layout)
    validation = ArraySet.from_parquet(data.validation_files, data.layout)
    return train, validation


def augment(batch, rng):
    """Noise from rng on the image (none without rng), bytes turned into their sizes."""
    img = batch["img"].float()
    if rng is not None:
        img = img + torch.from_numpy(rng.normal(size=tuple(img.shape)).astype(np.float32))
    return {"id": batch["id"], "img": img, "size": np.array([len(b) for b in batch["raw"]])}


def context(arrays, transform=augment, seed: int = 5, workers: int = 2, rank: int = 0, world: int = 1):
    ctx, _ = TrainContext.in_process(arrays[0], arrays[1], {}, num_epochs=2, seed=seed, transform=transform)
    ctx.feed, ctx.rank, ctx.world_size = FeedSettings(transform_workers=workers), rank, world
    return ctx


def by_id(batches) -> dict[int, np.ndarray]:
    return {i: b["img"][r].numpy() for b in batches for r, i in enumerate(b["id"].tolist())}


def test_a_transform_gets_the_same_rng_for_the_same_seed_epoch_step_and_rank(named_arrays) -> None:
    first = list(context(named_arrays).train_batches(1, 8))
    again = list(context(named_arrays).train_batches(1, 8))
    assert len(first) == len(again) == 7
    for a, b in zip(first, again, strict=True):
        assert set(a) == {"id", "img", "size"} and a["size"].dtype == torch.int64
        assert torch.equal(a["id"], b["id"]) and torch.equal(a["img"], b["img"])
        assert a["size"].tolist() == [len(raw_of(i)) for i in a["id"].tolist()]
    # the noise is the transform's rng: transform_rng(seed, epoch, step, rank)
    step = 3
    clean = np.stack([img_of(i).astype(np.float32) for i in first[step]["id"].tolist()])
    noise = transform_rng(5, 1, step, 0).normal(size=clean.shape).astype(np.float32)
    assert np.allclose(first[step]["img"].numpy() - clean, noise, atol=1e-4)


def test_a_transform_draws_differently_in_another_epoch_seed_or_rank(named_arrays) -> None:
    base = by_id(context(named_arrays).train_batches(0, 8))
    for other in (by_id(context(named_arrays).train_batches(1, 8)),
                  by_id(context(named_arrays, seed=6).train_batches(0, 8))):
        assert base.keys() == other.keys()
        assert all(not np.array_equal(base[i], other[i]) for i in base)
    rank1 = by_id(context(named_arrays, rank=1, world=2).train_batches(0, 8))
    assert rank1 and all(not np.array_equal(base[i], rank1[i]) for i in rank1)


def test_validation_batches_get_no_rng(named_arrays) -> None:
    seen: list[object] = []
    lock = threading.Lock()

    def record(batch, rng):
        with lock:
            seen.append(rng)
        return augment(batch, rng)

    ctx = context(named_arrays, transform=record)
    batches = list(ctx.validation_batches(10))
    assert len(seen) == len(batches) == 6 and all(rng is None for rng in seen)
    assert all(np.array_equal(img, img_of(i).astype(np.float32)) for i, img in by_id(batches).items())
    seen.clear()
    list(ctx.train_batches(0, 10))
    assert seen and all(isinstance(rng, np.random.Generator) for rng in seen)


def test_two_transform_workers_give_the_same_batches_in_the_same_order_as_one(named_arrays) -> None:
    one = list(context(named_arrays, workers=1).train_batches(1, 4))
    two = list(context(named_arrays, workers=2).train_batches(1, 4))
    plain = [b["id"] for b in context(named_arrays, transform=None).train_batches(1, 4)]
    assert len(one) == len(two) == len(plain) == 14
    for a, b, ids in zip(one, two, plain, strict=True):
        assert torch.equal(a["id"], ids) and torch.equal(b["id"], ids)
        assert torch.equal(a["img"], b["img"]) and torch.equal(a["size"], b["size"])


def test_a_transform_that_raises_fails_naming_it_and_the_batch(named_arrays) -> None:
    plain = [b["id"].tolist() for b in context(named_arrays, transform=None, rank=1, world=2).train_batches(1, 4)]
    step, victim = 5, plain[5][1]  # a row of this rank's 6th batch in epoch 1

    def fragile(batch, rng):
        if victim in batch["id"].tolist():
            raise ValueError(f"bad row {victim}\nmore detail")
        return augment(batch, rng)

    ctx = context(named_arrays, transform=fragile, rank=1, world=2)
    ctx.transform_name = "my_trainer.transform"
    with pytest.raises(TransformError) as caught:
        list(ctx.train_batches(1, 4))
    assert str(caught.value) == \
        f"my_trainer.transform failed on epoch 1 batch {step} (rank 1): ValueError: bad row {victim}"


@pytest.mark.parametrize("returned,pattern", [
    (lambda batch: [batch["img"]], r"^transform returned list on epoch 0 batch 0 \(rank 0\); it must return a "
                                   r"dict of tensors$"),
    (lambda batch: {"img": batch["img"], "raw": batch["raw"]},
     r"^transform returned list for 'raw' on epoch 0 batch 0 \(rank 0\); every value must be a tensor or numpy "
     r"array$"),
    (lambda batch: {"raw": np.array(batch["raw"], dtype=object)},
     r"^transform returned a numpy object array for 'raw' on epoch 0 batch 0 \(rank 0\); torch takes "),
])
def test_a_transform_returning_other_than_a_dict_of_tensors_fails(named_arrays, returned, pattern) -> None:
    ctx = context(named_arrays, transform=lambda batch, rng: returned(batch))
    with pytest.raises(TransformError, match=pattern):
        list(ctx.train_batches(0, 8))


def test_a_resumed_epoch_gets_the_same_transform_draws(named_arrays) -> None:
    full = list(context(named_arrays).train_batches(1, 8))
    ctx, _ = TrainContext.in_process(named_arrays[0], named_arrays[1], {}, num_epochs=2, seed=5, transform=augment,
                                     checkpoint={"cursor": {"epoch": 1, "step": 4}})
    resumed = list(ctx.train_batches(1, 8))
    assert len(resumed) == len(full) - 4
    for a, b in zip(full[4:], resumed, strict=True):
        assert torch.equal(a["id"], b["id"]) and torch.equal(a["img"], b["img"])


@pytest.mark.parametrize("value", [lambda b: b["img"].numpy()[:, ::-1],
                                   lambda b: np.array([str(i) for i in b["id"].tolist()])],
                         ids=["flipped-view", "str-array"])
def test_a_numpy_value_torch_cannot_take_is_a_transform_error_or_works(named_arrays, value) -> None:
    ctx = context(named_arrays, transform=lambda batch, rng: {"v": value(batch)})
    try:
        batches = list(ctx.train_batches(0, 8))
    except TransformError as exc:
        assert "'v'" in str(exc) and "epoch 0 batch 0 (rank 0)" in str(exc)
    else:
        assert all(isinstance(b["v"], torch.Tensor) for b in batches)


@pytest.fixture
def trainer_module(tmp_path, monkeypatch, request):
    """trainer_module(name, source): an importable module `name` in tmp_path."""
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))

    def write(name: str, source: str) -> str:
        (folder / f"{name}.py").write_text(source)
        request.addfinalizer(lambda: sys.modules.pop(name, None))
        return name

    return write


def full_spec(trainer: str, data: DataSpec) -> Spec:
    return Spec(name="columns", trainer=trainer, data=data, scheduler={"max_epochs": 1}, budget={"num_trials": 1})


TRAINER = """
import numpy as np

def train(ctx):
    pass

def transform(batch, rng):
    return {BODY}
"""


def test_the_check_runs_a_transform_that_returns_tensors(kinds_root, trainer_module) -> None:
    name = trainer_module("columns_ok_trainer", TRAINER.replace(
        "{BODY}", '{"img": batch["img"].float() / 255, "n": np.array([len(r) for r in batch["raw"]])}'))
    data_spec = spec(kinds_root, columns=["img", "raw"])
    check_trainer(full_spec(name, data_spec), resolve_data(data_spec, "s.yaml"), "s.yaml")


def test_the_check_refuses_a_transform_that_returns_a_non_tensor_on_the_first_rows(kinds_root, trainer_module) -> None:
    name = trainer_module("columns_bad_output_trainer", TRAINER.replace("{BODY}", '{"raw": batch["raw"]}'))
    data_spec = spec(kinds_root, columns=["img", "raw"])
    data = resolve_data(data_spec, "s.yaml")
    with pytest.raises(UserInputError) as caught:
        check_trainer(full_spec(name, data_spec), data, "s.yaml")
    assert str(caught.value) == (
        f"s.yaml: trainer: {name}.transform returned list for 'raw' on validation batch 0 (rank 0); every value "
        f"must be a tensor or numpy array, on the first rows of {data.train_files[0]}")


def test_the_check_refuses_a_transform_that_raises_on_the_first_rows(kinds_root, trainer_module) -> None:
    name = trainer_module("columns_raising_trainer", TRAINER.replace("{BODY}", "1 / 0"))
    data_spec = spec(kinds_root, columns=["img"])
    with pytest.raises(UserInputError, match=rf"^s\.yaml: trainer: {name}\.transform failed on validation batch 0 "
                                             r"\(rank 0\): ZeroDivisionError: division by zero, on the first rows "
                                             r"of .*part-0\.parquet$"):
        check_trainer(full_spec(name, data_spec), resolve_data(data_spec, "s.yaml"), "s.yaml")


def test_the_check_refuses_a_transform_with_the_tabular_shorthand(kinds_root, trainer_module) -> None:
    name = trainer_module("columns_tabular_trainer", TRAINER.replace("{BODY}", "batch"))
    data_spec = spec(kinds_root, features=["a", "b"], label="y")
    with pytest.raises(UserInputError, match=rf"^s\.yaml: data\.features: {name}\.transform takes named batches; "
                                             r"list the columns in data\.columns"):
        check_trainer(full_spec(name, data_spec), resolve_data(data_spec, "s.yaml"), "s.yaml")


def test_the_check_refuses_a_transform_without_batch_and_rng(kinds_root, trainer_module) -> None:
    source = "def train(ctx):\n    pass\n\ndef transform(batch):\n    return batch\n"
    name = trainer_module("columns_one_arg_trainer", source)
    data_spec = spec(kinds_root, columns=["img"])
    with pytest.raises(UserInputError, match=rf"^s\.yaml: trainer: {name}\.transform must be a function "
                                             r"transform\(batch, rng\)$"):
        check_trainer(full_spec(name, data_spec), resolve_data(data_spec, "s.yaml"), "s.yaml")


def test_the_check_refuses_a_ragged_row_in_the_first_rows_naming_file_and_column(tmp_path, trainer_module) -> None:
    grid = pa.array([[1.0, 2, 3, 4], [1.0, 2, 3]], pa.list_(pa.float32()))
    write_split_files(tmp_path / "data", [pa.table({"grid": grid})])
    name = trainer_module("columns_grid_trainer", TRAINER.replace("{BODY}", "batch"))
    data_spec = spec(tmp_path / "data", columns=["grid"], column_options={"grid": {"shape": [4]}})
    data = resolve_data(data_spec, "s.yaml")
    with pytest.raises(UserInputError) as caught:
        check_trainer(full_spec(name, data_spec), data, "s.yaml")
    assert str(caught.value) == (f"{data.train_files[0]}: column 'grid': row 1 has 3 values; "
                                 "column_options.shape [4] needs 4")


# -- 7. Ragged ----------------------------------------------------------------------------------

def random_rows(rng, count: int, dtype=np.int32) -> list[np.ndarray]:
    lengths = rng.integers(0, 6, size=count)
    lengths[rng.integers(0, count, size=max(count // 4, 1))] = 0  # zero-length rows for sure
    return [rng.integers(-100, 100, size=n).astype(dtype) for n in lengths]


def ragged(rows: list[np.ndarray]) -> Ragged:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    values = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    return Ragged(values, offsets)


def rows_of(array: Ragged) -> list[list[int]]:
    assert array.offsets[0] == 0 and array.offsets[-1] == len(array.values)
    return [array.values[a:b].tolist() for a, b in zip(array.offsets[:-1], array.offsets[1:], strict=True)]


@pytest.mark.parametrize("seed", range(5))
def test_ragged_take_slice_concat_and_padded_round_trip(seed) -> None:
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, 40)
    whole = ragged(rows)
    expected = [r.tolist() for r in rows]
    assert len(whole) == 40 and whole.lengths.tolist() == [len(r) for r in rows]
    assert whole.nbytes == whole.values.nbytes + whole.offsets.nbytes
    for pick in (rng.permutation(40), rng.integers(0, 40, size=25), np.array([], dtype=np.int64),
                 np.flatnonzero(whole.lengths == 0)):
        assert rows_of(whole.take(pick)) == [expected[i] for i in pick]
    cuts = np.sort(rng.choice(np.arange(1, 40), size=4, replace=False))
    bounds = [0, *cuts.tolist(), 40]
    parts = [whole.slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert [rows_of(p) for p in parts] == [expected[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert rows_of(Ragged.concat(parts)) == expected
    assert rows_of(Ragged.concat([p.take(np.arange(len(p))[::-1]) for p in parts])) == \
        [row for a, b in zip(bounds[:-1], bounds[1:], strict=True) for row in expected[a:b][::-1]]
    assert rows_of(whole.slice(7, 7)) == []
    for pad, max_length in ((0, None), (-3, 2), (9, 100), (5, 1)):
        padded, lengths = whole.padded(pad, max_length)
        cut = [row[:max_length] for row in expected]
        width = max(len(row) for row in cut)
        assert padded.dtype == whole.values.dtype and lengths.dtype == np.int64
        assert lengths.tolist() == [len(row) for row in cut]
        assert padded.tolist() == [row + [pad] * (width - len(row)) for row in cut]


def test_ragged_padded_of_only_empty_rows_or_no_rows() -> None:
    empty_rows = ragged([np.zeros(0, np.int32)] * 3)
    padded, lengths = empty_rows.padded(-1, None)
    assert padded.shape == (3, 0) and lengths.tolist() == [0, 0, 0]
    padded, lengths = empty_rows.slice(1, 1).padded(-1, 4)
    assert padded.shape == (0, 0) and lengths.tolist() == []


def test_blocks_of_arrays_and_ragged_take_slice_and_concat_row_by_row() -> None:
    rng = np.random.default_rng(11)
    rows = random_rows(rng, 30, dtype=np.float32)
    block = {"id": np.arange(30), "img": rng.integers(0, 255, size=(30, 2, 3)).astype(np.uint8),
             "seq": ragged(rows)}
    pick = rng.permutation(30)[:17]
    taken = take(block, pick)
    assert block_rows(taken) == 17 and taken["id"].tolist() == pick.tolist()
    assert (taken["img"] == block["img"][pick]).all() and taken["img"].flags.writeable
    assert rows_of(taken["seq"]) == [rows[i].tolist() for i in pick]
    joined = concat([slice_rows(taken, 0, 5), slice_rows(taken, 5, 5), slice_rows(taken, 5, 17)])
    assert joined["id"].tolist() == taken["id"].tolist() and (joined["img"] == taken["img"]).all()
    assert rows_of(joined["seq"]) == rows_of(taken["seq"])
