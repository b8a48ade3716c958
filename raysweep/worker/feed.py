"""Feeding a GPU from the memory loader: batches gathered by several threads straight
into reused page-locked buffers (`PinnedFeed`), or the used columns kept in the GPU's
own memory and batches gathered there (`DeviceCache`, `data.cache: gpu`).

Both give exactly the batches of the plain path (`ArraySet.train_blocks` +
`Layout.deliver` + a copy to the device): the same rows in the same order, the same
dtypes and shapes. They only change where the rows are gathered and how they travel.

- PinnedFeed: the fixed-width columns (the tabular matrix, labels, scalars, tensors,
  codes) of each batch are gathered with `np.take` (which releases the GIL) by
  `threads` threads, each filling its own range of rows, into one of `depth + 1`
  page-locked slots; the batch is then copied with `non_blocking=True` on the current
  stream and a CUDA event marks when the slot may be filled again. Up to `depth`
  batches are gathered ahead of the trainer. Each epoch's iterator has its own slots
  (torch's caching host allocator hands the same page-locked blocks back epoch after
  epoch), so two iterators never share a buffer. Variable-length columns (sequences,
  bytes, text) are taken on the host as before. Host memory: (depth + 1) slots of
  one batch each, whatever the data set's size.
- DeviceCache: the fixed-width columns are copied once to the device; each epoch the
  rank's row indices go up once, and every batch is an `index_select` on the device
  (validation batches are slices: no copy at all). Used when the columns fit in half
  of the GPU's free memory; variable-length columns stay on the host.

On a CPU device (tests, `scripts/gpu_check.py --device cpu`) the same code runs with
ordinary memory for the slots and a `clone` for the "device copy", so the order of
gathers, reuse of slots and batch contents are checked without a GPU.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from raysweep.data.arrays import ArraySet, Batch
from raysweep.data.columns import Block, Ragged
from raysweep.data.shards import Segments, iter_blocks, train_batch_indices, validation_block


@dataclass(frozen=True)
class FeedSettings:
    """How batches reach the trainer (the spec's data.transform_workers, data.cache and
    data.gather_threads), as plain data for the trainer's context."""

    transform_workers: int = 2
    """Background threads running the trainer module's `transform` on named batches."""
    cache: str = "host"
    """gpu keeps an in-memory split's fixed-width columns on the GPU (when they fit) and
    gathers batches there; host gathers them on the host."""
    gather_threads: int = 4
    """Threads gathering an in-memory split's batches into page-locked buffers (GPU workers)."""
    on_cpu: bool = False
    """Use the GPU feeds on a CPU device too (tests, `scripts/gpu_check.py --device cpu`)."""

MIN_CHUNK_BYTES = 256 * 1024
"""A gather thread gets at least this many bytes of a batch (smaller batches use fewer
threads: a thread hand-off costs more than gathering a few KB)."""
CACHE_FRACTION = 0.5
"""`data.cache: gpu` keeps the columns on the device when they take at most this
fraction of its free memory (the rest is for the model, activations, optimizer)."""


def fixed_columns(block: Block) -> dict[str, np.ndarray]:
    """The fixed-width columns of a block (what the feeds gather)."""
    return {k: v for k, v in block.items() if isinstance(v, np.ndarray)}


def to_device(batch: Batch, device: torch.device) -> Batch:
    """A batch's host tensors copied to `device` (page-locked ones without blocking the
    host; pageable ones are pinned first); tensors already there and lists of bytes or
    strings are left as they are."""
    if isinstance(batch, torch.Tensor):
        if batch.device == device:
            return batch
        if device.type != "cuda":
            return batch.to(device)
        # Pinned staging + non-blocking copies: the host prepares the next batch while
        # the GPU still works on this one (a pageable copy would wait for the GPU).
        host = batch if batch.is_pinned() else batch.pin_memory()
        return host.to(device, non_blocking=True)
    if isinstance(batch, tuple):
        return tuple(to_device(t, device) for t in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


@dataclass
class _Slot:
    """One batch's page-locked staging buffers, and when they may be refilled."""

    host: dict[str, torch.Tensor]
    views: dict[str, np.ndarray]
    copied: Any = None
    """CUDA event recorded after the device copy out of this slot (None: free)."""

    def wait(self) -> None:
        if self.copied is not None:
            self.copied.synchronize()
            self.copied = None


class PinnedFeed:
    """Device batches of an in-memory split, gathered by `threads` threads into reused
    page-locked buffers, `depth` batches ahead (see the module's docstring)."""

    def __init__(self, split: ArraySet, device: torch.device, threads: int = 4, depth: int = 2) -> None:
        self.split, self.layout, self.device = split, split.layout, device
        self.cuda = device.type == "cuda"
        self.fixed = fixed_columns(split.block)
        self.threads, self.depth = max(1, threads), max(1, depth)
        row_bytes = sum(v[:1].nbytes for v in self.fixed.values())
        self.min_chunk_rows = max(1, MIN_CHUNK_BYTES // max(1, row_bytes))
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="raysweep-gather")

    def _slots(self, rows: int) -> list[_Slot]:
        """`depth + 1` staging slots of `rows` rows each."""
        slots = []
        for _ in range(self.depth + 1):
            host = {k: torch.empty((rows, *v.shape[1:]), dtype=_torch_dtype(v.dtype), pin_memory=self.cuda)
                    for k, v in self.fixed.items()}
            slots.append(_Slot(host, {k: t.numpy() for k, t in host.items()}))
        return slots

    def train(self, rank: int, world_size: int, batch_size: int, seed: int, epoch: int,
              start_step: int = 0, done: Segments = ()) -> Iterator[Batch]:
        rows = train_batch_indices(len(self.split), rank, world_size, batch_size, seed, epoch, done)[start_step:]
        return self.batches(rows, max((len(r) for r in rows), default=0))

    def validation(self, rank: int, world_size: int, batch_size: int) -> Iterator[Batch]:
        block = validation_block(len(self.split), rank, world_size)
        return self.batches(list(iter_blocks(len(self.split), batch_size, block)), batch_size)

    def batches(self, row_sets: list[Any], largest: int) -> Iterator[Batch]:
        """The device batch of each row set (an index array or a slice), in order."""
        slots = self._slots(largest)
        pending: deque[tuple[_Slot, Any, list[Future[Any]]]] = deque()
        turn = 0
        try:
            for rows in row_sets:
                if len(pending) == self.depth:
                    yield self._emit(*pending.popleft())
                slot = slots[turn % len(slots)]
                turn += 1
                slot.wait()  # (its previous batch was emitted a turn ago: its copy is done or nearly)
                pending.append((slot, rows, self._fill(slot, rows)))
            while pending:
                yield self._emit(*pending.popleft())
        finally:
            for _, _, futures in pending:  # an abandoned epoch: no thread writes into a slot after this
                for future in futures:
                    future.cancel()
                for future in futures:
                    if not future.cancelled():
                        future.exception()

    def _fill(self, slot: _Slot, rows: Any) -> list[Future[Any]]:
        n = _count(rows)
        chunks = max(1, min(self.threads, n // self.min_chunk_rows))
        futures: list[Future[Any]] = [
            self._pool.submit(self._gather, slot, rows, k * n // chunks, (k + 1) * n // chunks) for k in range(chunks)]
        if len(self.fixed) < len(self.split.block):  # variable-length columns: taken on the host
            futures.append(self._pool.submit(self._take_ragged, rows))
        return futures

    def _gather(self, slot: _Slot, rows: Any, a: int, b: int) -> None:
        for name, column in self.fixed.items():
            out = slot.views[name][a:b]
            if isinstance(rows, slice):
                np.copyto(out, column[rows.start + a:rows.start + b])
            else:  # mode="clip": no bounds pass and no buffered copy (the indices are valid)
                np.take(column, rows[a:b], axis=0, out=out, mode="clip")

    def _take_ragged(self, rows: Any) -> Block:
        ragged = {k: v for k, v in self.split.block.items() if isinstance(v, Ragged)}
        if isinstance(rows, slice):
            return {k: v.slice(rows.start, rows.stop) for k, v in ragged.items()}
        return {k: v.take(rows) for k, v in ragged.items()}

    def _emit(self, slot: _Slot, rows: Any, futures: list[Future[Any]]) -> Batch:
        n = _count(rows)
        block: dict[str, Any] = {}  # (host arrays and device tensors: Layout.deliver takes both)
        for future in futures:
            block.update(future.result() or {})
        host = {k: t[:n] for k, t in slot.host.items()}
        if self.cuda:
            device = {k: t.to(self.device, non_blocking=True) for k, t in host.items()}
            slot.copied = torch.cuda.Event()
            slot.copied.record()
        else:  # (the CPU stand-in for a device copy: the slot is free again at once)
            device = {k: t.clone() for k, t in host.items()}
        block.update(device)
        return to_device(self.layout.deliver(_ordered(block, self.split.block)), self.device)


class DeviceCache:
    """A split's fixed-width columns resident on `device`; batches gathered there."""

    def __init__(self, split: ArraySet, device: torch.device) -> None:
        self.split, self.layout, self.device = split, split.layout, device
        with warnings.catch_warnings():  # (read-only mapped arrays: copied, never written)
            warnings.simplefilter("ignore", UserWarning)
            self.columns = {k: torch.from_numpy(v).to(device) if device.type == "cuda" else
                            torch.from_numpy(np.array(v)) for k, v in fixed_columns(split.block).items()}
        self.ragged = {k: v for k, v in split.block.items() if isinstance(v, Ragged)}

    @staticmethod
    def nbytes(split: ArraySet) -> int:
        return sum(v.nbytes for v in fixed_columns(split.block).values())

    def train(self, rank: int, world_size: int, batch_size: int, seed: int, epoch: int,
              start_step: int = 0, done: Segments = ()) -> Iterator[Batch]:
        batches = train_batch_indices(len(self.split), rank, world_size, batch_size, seed, epoch, done)
        # One upload of the rank's whole epoch of indices; each batch is a slice of it.
        order = torch.from_numpy(np.concatenate(batches)).to(self.device)
        bounds = np.concatenate([[0], np.cumsum([len(b) for b in batches])])
        for step in range(start_step, len(batches)):
            index = order[int(bounds[step]):int(bounds[step + 1])]
            block: dict[str, Any] = {k: v.index_select(0, index) for k, v in self.columns.items()}
            block.update({k: v.take(batches[step]) for k, v in self.ragged.items()})
            yield to_device(self.layout.deliver(_ordered(block, self.split.block)), self.device)

    def validation(self, rank: int, world_size: int, batch_size: int) -> Iterator[Batch]:
        block = validation_block(len(self.split), rank, world_size)
        for rows in iter_blocks(len(self.split), batch_size, block):
            # (a copy on the device: a trainer that scales its batch in place must not
            # change the cache)
            part: dict[str, Any] = {k: v[rows].clone() for k, v in self.columns.items()}
            part.update({k: v.slice(rows.start, rows.stop) for k, v in self.ragged.items()})
            yield to_device(self.layout.deliver(_ordered(part, self.split.block)), self.device)


def _count(rows: Any) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else len(rows)


def _ordered(block: dict[str, Any], like: Block) -> Block:
    """`block`'s entries in the split's column order (a named batch keeps it)."""
    return {k: block[k] for k in like}


def free_bytes(device: torch.device) -> int:
    """Free memory of `device` (a CPU: the machine's available memory)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_feed(split: Any, device: torch.device, cache: str, threads: int, on_cpu: bool = False,
                log: Any = print) -> PinnedFeed | DeviceCache | None:
    """The feed a split gets on `device` (None: the plain path). Only in-memory splits
    on a GPU get one (`on_cpu`: on a CPU device too, for tests and the CPU run of
    scripts/gpu_check.py); `cache="gpu"` takes the device cache when it fits."""
    if not isinstance(split, ArraySet) or (device.type != "cuda" and not on_cpu):
        return None
    if cache == "gpu":
        need = DeviceCache.nbytes(split)
        free = free_bytes(device)
        if need <= CACHE_FRACTION * free:
            return DeviceCache(split, device)
        log(f"raysweep: data.cache gpu: the columns take {need / 1e9:.2f} GB, over {CACHE_FRACTION:g} of the "
            f"{free / 1e9:.2f} GB free on {device}: batches are gathered on the host instead")
    return PinnedFeed(split, device, threads)
