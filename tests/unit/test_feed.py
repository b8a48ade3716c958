"""The GPU feeds of the memory loader (raysweep.worker.feed), run on CPU: the
page-locked gather (`PinnedFeed`) and `data.cache: gpu` (`DeviceCache`) give exactly the
plain path's batches, every kind of column, every rank, a resumed epoch, and batches a
trainer keeps stay intact while later ones are gathered into the reused buffers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_columns import NAMED, NAMED_OPTIONS, assert_named_batch, spec, write_kinds

from raysweep.config.spec import DataSpec
from raysweep.data.arrays import ArraySet
from raysweep.data.files import resolve_data
from raysweep.worker import feed as feed_module
from raysweep.worker.context import TrainContext
from raysweep.worker.feed import DeviceCache, FeedSettings, PinnedFeed, choose_feed

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """Every column kind (tensor, sequence, bytes, text, codes, scalars) as named batches."""
    root = write_kinds(tmp_path_factory.mktemp("kinds"))
    data = resolve_data(spec(root, columns=NAMED, column_options=NAMED_OPTIONS), "s.yaml")
    return ArraySet.from_parquet(data.train_files, data.layout)


@pytest.fixture(scope="module")
def tabular():
    rng = np.random.default_rng(0)
    return ArraySet.from_matrix(rng.random((1003, 5), dtype=np.float32), rng.integers(0, 4, 1003))


def flat(batch) -> list:
    """A batch as comparable Python values."""
    if isinstance(batch, torch.Tensor):
        return [str(batch.dtype), tuple(batch.shape), batch.tolist()]
    if isinstance(batch, tuple):
        return [flat(t) for t in batch]
    if isinstance(batch, dict):
        return [(k, flat(v)) for k, v in batch.items()]
    return list(batch)


def small_chunks(feed: PinnedFeed) -> PinnedFeed:
    feed.min_chunk_rows = 3  # (several threads per batch even for these tiny batches)
    return feed


def make(kind: str, split: ArraySet):
    return small_chunks(PinnedFeed(split, CPU, threads=3, depth=2)) if kind == "pinned" else DeviceCache(split, CPU)


@pytest.mark.parametrize("kind", ["pinned", "cache"])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_a_feed_gives_the_plain_paths_training_batches(tabular, kind, world) -> None:
    feed = make(kind, tabular)
    for epoch in (0, 1):
        for rank in range(world):
            plain = [flat(b) for b in tabular.train_batches(rank, world, 64, 7, epoch)]
            got = [flat(b) for b in feed.train(rank, world, 64, 7, epoch)]
            assert got == plain, (kind, world, rank, epoch)


@pytest.mark.parametrize("kind", ["pinned", "cache"])
def test_every_kind_of_column_comes_through_a_feed_as_on_the_plain_path(named, kind) -> None:
    feed = make(kind, named)
    for world in (1, 2):
        seen = []
        for rank in range(world):
            plain = list(named.train_batches(rank, world, 10, 0, 3))
            got = list(feed.train(rank, world, 10, 0, 3))
            assert [flat(b) for b in got] == [flat(b) for b in plain]
            for batch in got:
                assert_named_batch(batch)
                seen += batch["id"].tolist()
        assert sorted(seen) == list(range(len(named)))  # every row once per epoch across ranks
        vals = [b for rank in range(world) for b in feed.validation(rank, world, 10)]
        assert [flat(b) for b in vals] == [flat(b) for r in range(world) for b in named.eval_batches(r, world, 10)]


@pytest.mark.parametrize("kind", ["pinned", "cache"])
def test_a_resumed_epoch_starts_at_its_step(tabular, kind) -> None:
    feed = make(kind, tabular)
    whole = [flat(b) for b in feed.train(1, 2, 50, 3, 2)]
    assert [flat(b) for b in feed.train(1, 2, 50, 3, 2, start_step=4)] == whole[4:]
    assert list(feed.train(1, 2, 50, 3, 2, start_step=len(whole))) == []


def test_batches_a_trainer_keeps_stay_intact_while_the_buffers_are_reused(tabular) -> None:
    """Three slots serve eleven batches: a batch delivered is not the slot's memory."""
    feed = small_chunks(PinnedFeed(tabular, CPU, threads=2, depth=2))
    kept = list(feed.train(0, 1, 97, 0, 0))
    assert len(kept) == 11
    assert [flat(b) for b in kept] == [flat(b) for b in tabular.train_batches(0, 1, 97, 0, 0)]


def test_an_abandoned_epoch_leaves_the_feed_usable(tabular) -> None:
    feed = small_chunks(PinnedFeed(tabular, CPU, threads=2, depth=3))
    epoch = feed.train(0, 1, 40, 0, 0)
    next(epoch), next(epoch)
    epoch.close()  # (a trainer that breaks out of its loop: gathers still running are waited for)
    assert [flat(b) for b in feed.train(0, 1, 40, 0, 1)] == [flat(b) for b in tabular.train_batches(0, 1, 40, 0, 1)]


def test_validation_batches_from_the_cache_are_copies(tabular) -> None:
    cache = DeviceCache(tabular, CPU)
    x, _ = next(iter(cache.validation(0, 1, 16)))
    x.mul_(0)  # a trainer scaling its batch in place
    assert [flat(b) for b in cache.validation(0, 1, 16)] == [flat(b) for b in tabular.eval_batches(0, 1, 16)]


def test_which_feed_a_split_gets(tabular, monkeypatch) -> None:
    assert choose_feed(tabular, CPU, "gpu", 2) is None  # a CPU worker: the plain path
    assert isinstance(choose_feed(tabular, CPU, "host", 2, on_cpu=True), PinnedFeed)
    assert isinstance(choose_feed(tabular, CPU, "gpu", 2, on_cpu=True), DeviceCache)
    assert choose_feed(object(), CPU, "gpu", 2, on_cpu=True) is None  # a streamed split
    monkeypatch.setattr(feed_module, "CACHE_FRACTION", 1e-12)  # (the columns no longer "fit")
    lines: list[str] = []
    assert isinstance(choose_feed(tabular, CPU, "gpu", 2, on_cpu=True, log=lines.append), PinnedFeed)
    assert len(lines) == 1 and "data.cache gpu" in lines[0] and "gathered on the host" in lines[0]


@pytest.mark.parametrize("cache", ["host", "gpu"])
def test_a_trainer_learns_the_same_through_a_feed(cache) -> None:
    """digits_mlp in-process on CPU, plain path vs a feed: the same metrics, bit for bit."""
    from trainers import digits_mlp

    rng = np.random.default_rng(1)
    x = rng.random((600, digits_mlp.NUM_FEATURES), dtype=np.float32)
    train = ArraySet.from_matrix(x, x[:, :10].argmax(axis=1).astype(np.int64))
    validation = ArraySet.from_matrix(x[:128], x[:128, :10].argmax(axis=1).astype(np.int64))
    params = {"hidden": 16, "num_layers": 1, "batch_size": 64, "lr": 1e-2, "optimizer": "adam"}
    results = []
    for on in (False, True):
        torch.manual_seed(0)
        ctx, reports = TrainContext.in_process(train, validation, params, num_epochs=2, seed=5)
        ctx.feed = FeedSettings(cache=cache, gather_threads=2, on_cpu=on)
        digits_mlp.train(ctx)
        results.append([{k: m[k] for k in ("train_loss", "val_loss", "val_accuracy")} for m, _ in reports])
        assert isinstance(ctx.source.feeds.get(id(train)), (PinnedFeed, DeviceCache) if on else type(None))
    assert results[0] == results[1]


def test_cache_gpu_with_the_stream_loader_is_refused() -> None:
    with pytest.raises(ValueError, match="cache: gpu keeps the memory loader's columns in GPU memory"):
        DataSpec(train="t", validation="v", features=["a"], cache="gpu", loader="stream")
