"""Where a trainer's batches come from: one rank's shard of a split, through the
trainer module's `transform` (in background threads) or a GPU feed, onto the device.
A part of the trainer's context (`TrainContext.train_batches`, `validation_batches`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from raysweep.data.arrays import Batch, DataSplit
from raysweep.data.columns import Block, Layout
from raysweep.data.shards import Segments
from raysweep.worker.feed import DeviceCache, FeedSettings, PinnedFeed, choose_feed, to_device


class TransformError(RuntimeError):
    """The trainer's `transform` raised or returned something other than tensors: the
    run fails with this one line (which transform, which batch)."""


Transform = Callable[[dict[str, Any], "np.random.Generator | None"], dict[str, Any]]


def transform_rng(seed: int, epoch: int, step: int, rank: int) -> np.random.Generator:
    """A training batch's transform randomness: a function of (seed, epoch, step, rank)
    only, so an augmented run (and its resume) sees the same draws."""
    return np.random.default_rng([seed % 2**32, epoch, step, rank])


@dataclass
class BatchSource:
    """One rank's batches of any split: built from the context's rank, device, seed,
    `feed` settings (data.transform_workers, cache, gather_threads) and transform."""

    rank: int
    world_size: int
    seed: int
    device: torch.device
    feed: FeedSettings = field(default_factory=FeedSettings)
    transform: Transform | None = None
    transform_name: str = "transform"
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    feeds: dict[int, PinnedFeed | DeviceCache | None] = field(default_factory=dict, init=False, repr=False)
    """The GPU feed chosen for each split (by id; None: the plain path)."""

    def train(self, split: DataSplit, epoch: int, batch_size: int, start: int = 0,
              done: Segments = ()) -> Iterator[Batch]:
        """This rank's shard of `epoch` from batch `start` (its rest after `done`), on the device."""
        feed = self._feed(split)
        if feed is not None:
            return feed.train(self.rank, self.world_size, batch_size, self.seed, epoch, start, done)
        blocks = split.train_blocks(self.rank, self.world_size, batch_size, self.seed, epoch, start, done)
        return (to_device(b, self.device) for b in self._batches(split.layout, blocks, epoch, start))

    def validation(self, split: DataSplit, batch_size: int) -> Iterator[Batch]:
        """This rank's block of `split`, in order, on the device."""
        feed = self._feed(split)
        if feed is not None:
            yield from feed.validation(self.rank, self.world_size, batch_size)
            return
        blocks = split.eval_blocks(self.rank, self.world_size, batch_size)
        for batch in self._batches(split.layout, blocks, None, 0):
            yield to_device(batch, self.device)

    def _feed(self, split: DataSplit) -> PinnedFeed | DeviceCache | None:
        """The GPU feed of an in-memory split (chosen once per split; None: the plain
        path, as on CPU workers, for streamed splits and with a `transform`)."""
        if self.transform is not None:
            return None
        if id(split) not in self.feeds:
            self.feeds[id(split)] = choose_feed(split, self.device, self.feed.cache, self.feed.gather_threads,
                                                on_cpu=self.feed.on_cpu)
        return self.feeds[id(split)]

    def _batches(self, layout: Layout, blocks: Iterator[Block], epoch: int | None, first: int) -> Iterator[Batch]:
        """Host blocks -> the trainer's batches; through `transform` in background
        threads (in order, a few ahead) when the trainer defines one."""
        if self.transform is None:
            for block in blocks:
                yield layout.deliver(block)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.feed.transform_workers, thread_name_prefix="raysweep-transform")
        ahead: deque[Future[Batch]] = deque()
        step = first
        try:
            for block in blocks:
                ahead.append(self._pool.submit(self.transformed, layout, block, epoch, step))
                step += 1
                if len(ahead) > self.feed.transform_workers:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()

    def transformed(self, layout: Layout, block: Block, epoch: int | None, step: int) -> Batch:
        """`block` delivered and run through the transform (epoch None: a validation batch)."""
        assert self.transform is not None
        where = (f"epoch {epoch} batch {step}" if epoch is not None else f"validation batch {step}") + \
            f" (rank {self.rank})"
        rng = transform_rng(self.seed, epoch, step, self.rank) if epoch is not None else None
        try:
            out = self.transform(layout.deliver(block), rng)
        except Exception as exc:  # the user's transform failed on this batch
            text = str(exc).strip().splitlines()
            raise TransformError(f"{self.transform_name} failed on {where}: {type(exc).__name__}: "
                                 f"{text[0][:300] if text else ''}") from None
        if not isinstance(out, dict):
            raise TransformError(f"{self.transform_name} returned {type(out).__name__} on {where}; "
                                 "it must return a dict of tensors")
        batch = {}
        for key, value in out.items():
            if isinstance(value, np.ndarray):
                try:  # (a flipped view has negative strides: copied into a contiguous array)
                    value = torch.from_numpy(np.ascontiguousarray(value))
                except TypeError:
                    raise TransformError(f"{self.transform_name} returned a numpy {value.dtype} array for {key!r} "
                                         f"on {where}; torch takes numbers and bools only") from None
            if not isinstance(value, torch.Tensor):
                raise TransformError(f"{self.transform_name} returned {type(value).__name__} for {key!r} on {where}; "
                                     "every value must be a tensor or numpy array")
            batch[key] = value
        return batch
