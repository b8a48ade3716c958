"""The stream loader on local Parquet files (no Ray): exact, equal, seeded, resumable."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysweep.config.spec import DataSpec
from raysweep.data.files import resolve_data
from raysweep.data.shards import num_train_batches
from raysweep.data.stream import DataReadError, StreamSettings, StreamSource, StreamSplit


def write_rows(root, num_rows=1000, files=3, row_group_size=37):
    """Row ids 0..n-1 spread over `files` files of small row groups; x0 = row id."""
    (root / "train").mkdir(parents=True)
    ids = np.arange(num_rows)
    for i, part in enumerate(np.array_split(ids, files)):
        table = pa.table({"x0": part.astype(np.float32), "x1": (part % 7).astype(np.float32),
                          "label": (part % 3).astype(np.int64)})
        pq.write_table(table, root / "train" / f"part-{i}.parquet", row_group_size=row_group_size)
    return root / "train"


def validation_copy(train: Path) -> str:
    """A validation split of its own (a copy of the first train file): check refuses
    splits that share files."""
    folder = train.parent / "validation"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(train / "part-0.parquet", folder / "part-0.parquet")
    return str(folder)


@pytest.fixture
def split(tmp_path):
    folder = write_rows(tmp_path)
    data = resolve_data(DataSpec(train=str(folder), validation=validation_copy(folder), features=["x0", "x1"],
                                 label="label"), "spec.yaml")
    source = StreamSource(data.train_files, data.train_units, data.layout)
    return StreamSplit(source, StreamSettings(window_rows=50, prefetch_windows=2, read_threads=2))


def epoch_rows(split, world, batch_size, seed=0, epoch=0):
    return [[b[0][:, 0].numpy().astype(int) for b in split.train_batches(r, world, batch_size, seed, epoch)]
            for r in range(world)]


@pytest.mark.parametrize("world,batch_size", [(1, 64), (2, 64), (3, 17), (4, 1000)])
def test_every_row_once_per_epoch_with_equal_batch_counts(split, world, batch_size):
    ranks = epoch_rows(split, world, batch_size)
    assert len({len(batches) for batches in ranks}) == 1
    assert len(ranks[0]) == num_train_batches(len(split), world, batch_size)
    seen = np.concatenate([np.concatenate(b) for b in ranks])
    assert sorted(seen.tolist()) == list(range(1000))
    assert all(len(b) > 0 for batches in ranks for b in batches)


def test_labels_travel_with_their_rows(split):
    for x, y in split.train_batches(0, 2, 64, 0, 0):
        assert (y.numpy() == x[:, 0].numpy().astype(int) % 3).all()
        assert x.dtype.is_floating_point and y.dtype == __import__("torch").int64


def test_same_seed_and_epoch_give_the_same_order_and_others_differ(split):
    first = np.concatenate(epoch_rows(split, 2, 32)[1])
    again = np.concatenate(epoch_rows(split, 2, 32)[1])
    other_epoch = np.concatenate(epoch_rows(split, 2, 32, epoch=1)[1])
    assert (first == again).all()
    assert not (first == other_epoch).all()
    assert not (np.diff(first) == 1).all(), "rows are shuffled within a rank"


@pytest.mark.parametrize("start_step", [0, 1, 5, 9, 15])
def test_a_resume_at_step_s_continues_with_the_same_batches(split, start_step):
    full = [b[0][:, 0].numpy() for b in split.train_batches(1, 2, 32, 3, 4)]
    resumed = [b[0][:, 0].numpy() for b in split.train_batches(1, 2, 32, 3, 4, start_step=start_step)]
    assert len(resumed) == len(full) - start_step
    assert all((a == b).all() for a, b in zip(full[start_step:], resumed, strict=True))


def test_evaluation_blocks_cover_every_row_once_in_order(split):
    blocks = [np.concatenate([x[:, 0].numpy() for x, _ in split.eval_batches(r, 3, 64)]) for r in range(3)]
    assert np.concatenate(blocks).astype(int).tolist() == list(range(1000))
    assert sum(split.local_rows(r, 3, train=False) for r in range(3)) == 1000


def test_a_deleted_file_fails_naming_it(tmp_path):
    folder = write_rows(tmp_path)
    data = resolve_data(DataSpec(train=str(folder), validation=validation_copy(folder), features=["x0"],
                                 label="label"), "s")
    split = StreamSplit(StreamSource(data.train_files, data.train_units, data.layout))
    (folder / "part-1.parquet").unlink()
    with pytest.raises(DataReadError, match="part-1.parquet"):
        list(split.train_batches(0, 1, 64, 0, 0))


def test_a_mid_epoch_cursor_of_another_world_size_is_refused_in_one_line(split):
    """The stream loader resumes a mid-epoch checkpoint only at the world size that saved
    it (re-sharding its windows' rest is not built): said, not trained on wrong rows."""
    from raysweep.data.stream import MidEpochWorldSizeError

    with pytest.raises(MidEpochWorldSizeError, match=r"^data.loader: stream: a mid-epoch checkpoint of epoch 1 was "
                                                     r"saved by 3 ranks of "
                                                     r"batch 16 and this run has 2 of batch 16; .*memory loader\)$"):
        list(split.train_blocks(0, 2, 16, 0, 1, 0, done=((3, 16, 4),)))
