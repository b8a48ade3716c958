"""The stream loader: each rank reads only its (file, row group) units, straight from storage.

No driver read, nothing in Ray's object store. Which rows a rank reads, and in which
order, is `raysweep.data.shards`' pure math; this module reads them. Windows of
`window_rows` rows are decoded by background threads (pyarrow releases the GIL),
at most `prefetch_windows` ahead of the trainer, so a worker holds about

    (prefetch_windows + 2) x 3 x window_rows x row_bytes   (windows decoded, as host blocks, shuffled)
  + (read_threads + 1) x (one decoded row group of the used columns)

in memory, whatever the data set's size (row_bytes: the used columns' host size per
row, `Layout.row_bytes`; tests/integration/test_stream_memory.py measures it).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.data.arrays import SplitBatches
from raysweep.data.columns import Block, ColumnDataError, Layout, concat, slice_rows, take
from raysweep.data.columns import block_rows as size_of
from raysweep.data.shards import (
    Segment,
    Segments,
    StreamSettings,
    StreamUnit,
    batch_offsets,
    contiguous_range,
    num_train_batches,
    segments,
    unit_order,
    window_permutation,
)
from raysweep.data.storage import is_object_store, open_input


class MidEpochWorldSizeError(RuntimeError):
    """A stream-loader run resumed mid-epoch at another world size than saved the cursor."""


class DataReadError(RuntimeError):
    """A file could not be read during a run (deleted, cut short, unreachable): the
    run fails naming it, and a retry resumes from the latest checkpoint."""


@dataclass(frozen=True)
class StreamSource:
    """One split as the stream loader sees it: its files and their row groups."""

    files: tuple[str, ...]
    units: tuple[StreamUnit, ...]
    layout: Layout

    @property
    def num_rows(self) -> int:
        return sum(u[2] for u in self.units)


class StreamSplit(SplitBatches):
    """A split read by each rank straight from storage (see the module docstring)."""

    def __init__(self, source: StreamSource, settings: StreamSettings | None = None) -> None:
        self.source, self.settings = source, settings or StreamSettings()
        self.layout = source.layout
        self._columns = source.layout.names
        self._pool: ThreadPoolExecutor | None = None
        self._cache: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()
        self._loading: dict[tuple[int, int], Future[pa.Table]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def __len__(self) -> int:
        return self.source.num_rows

    def __getstate__(self) -> dict[str, object]:
        return {"source": self.source, "settings": self.settings}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["source"], state["settings"])  # type: ignore[misc]

    # -- reading -----------------------------------------------------------------

    def _file(self, index: int) -> tuple[pa.NativeFile, pq.FileMetaData]:
        """This thread's open handle on file `index` and its footer (a few kept per thread)."""
        files: OrderedDict[int, tuple[pa.NativeFile, pq.FileMetaData]] = getattr(self._local, "files", None) \
            or OrderedDict()
        self._local.files = files
        if index not in files:
            uri = self.source.files[index]
            try:
                handle = open_input(uri)
                files[index] = handle, pq.ParquetFile(handle).metadata
            except (OSError, pa.ArrowException) as exc:
                raise DataReadError(f"{uri}: cannot open: {_first_line(exc)}") from exc
            while len(files) > 4:
                files.popitem(last=False)[1][0].close()
        return files[index]

    def _row_group(self, file: int, group: int) -> pa.Table:
        """A decoded row group of the used columns, read once: the last few are kept
        (consecutive windows usually share one), and a thread that needs one another
        thread is reading waits for that read instead of reading it again."""
        key = (file, group)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            loading = self._loading.get(key)
            if loading is None:
                loading = self._loading[key] = Future()
                owner = True
            else:
                owner = False
        if not owner:
            return loading.result()
        try:
            table = self._read_row_group(file, group)
        except BaseException as exc:
            loading.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._loading[key]
        with self._lock:
            self._cache[key] = table
            while len(self._cache) > self.settings.read_threads + 1:
                self._cache.popitem(last=False)
        loading.set_result(table)
        return table

    def _read_row_group(self, file: int, group: int) -> pa.Table:
        handle, footer = self._file(file)
        try:
            # A reader per row group, on the cached handle and footer: a long-lived
            # reader keeps the byte ranges it pre-buffered (tens of MB per file).
            # Pre-buffering coalesces an object store's ranged GETs; local reads need none.
            reader = pq.ParquetFile(handle, metadata=footer, pre_buffer=is_object_store(self.source.files[file]))
            return reader.read_row_group(group, columns=self._columns)
        except (OSError, pa.ArrowException) as exc:
            raise DataReadError(f"{self.source.files[file]}: row group {group}: {_first_line(exc)}") from exc

    def _read(self, pieces: list[Segment]) -> Block:
        """The rows of `pieces`, in order, as one host block."""
        tables = (self._row_group(file, group).slice(start, stop - start) for file, group, start, stop in pieces)
        try:
            return self.layout.read(tables, rows=sum(stop - start for _, _, start, stop in pieces))
        except ColumnDataError:
            for file, group, start, stop in pieces:
                try:
                    self.layout.read([self._row_group(file, group).slice(start, stop - start)])
                except ColumnDataError as exc:
                    raise ColumnDataError(f"{self.source.files[file]}: row group {group}: {exc}") from None
            raise

    def _windows(self, load: list[tuple[int, int]], fetch) -> Iterator[Block]:  # noqa: ANN001
        """Windows decoded in the background, in order, at most `prefetch_windows` ahead."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.settings.read_threads, thread_name_prefix="raysweep-stream")
        ahead: deque[Future[Block]] = deque()
        todo = iter(load)
        try:
            while True:
                while len(ahead) < self.settings.prefetch_windows + 1:
                    item = next(todo, None)
                    if item is None:
                        break
                    ahead.append(self._pool.submit(fetch, *item))
                if not ahead:
                    return
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()

    # -- the DataSplit interface ---------------------------------------------------

    def train_blocks(self, rank: int, world_size: int, batch_size: int, seed: int, epoch: int,
                     start_step: int = 0, done: Segments = ()) -> Iterator[Block]:
        if done:
            raise MidEpochWorldSizeError(
                f"data.loader: stream: a mid-epoch checkpoint of epoch {epoch} was saved by {done[-1][0]} ranks of "
                f"batch {done[-1][1]} and this run has {world_size} of batch {batch_size}; the stream loader resumes "
                "one only at the sizes that saved it (run with those, or use the memory loader)")
        units = [self.source.units[i] for i in unit_order(len(self.source.units), seed, epoch)]
        lo, hi = contiguous_range(len(self), rank, world_size)
        bounds = batch_offsets(hi - lo, num_train_batches(len(self), world_size, batch_size))
        if start_step >= len(bounds) - 1:
            return
        window = self.settings.window_rows
        first = int(bounds[start_step]) // window

        def fetch(index: int, size: int) -> Block:
            block = self._read(segments(units, lo + index * window, lo + index * window + size))
            return take(block, window_permutation(size, seed, epoch, rank, index))

        load = [(w, min(window, hi - lo - w * window)) for w in range(first, math.ceil((hi - lo) / window))]
        yield from _cut(self._windows(load, fetch), bounds, start_step, first * window)

    def eval_blocks(self, rank: int, world_size: int, batch_size: int) -> Iterator[Block]:
        units = list(self.source.units)
        lo, hi = contiguous_range(len(self), rank, world_size)
        window = max(self.settings.window_rows // batch_size, 1) * batch_size

        def fetch(index: int, size: int) -> Block:
            return self._read(segments(units, lo + index * window, lo + index * window + size))

        load = [(w, min(window, hi - lo - w * window)) for w in range(math.ceil((hi - lo) / window))]
        for block in self._windows(load, fetch):
            rows = size_of(block)
            for start in range(0, rows, batch_size):
                yield slice_rows(block, start, min(start + batch_size, rows))

    def local_rows(self, rank: int, world_size: int, train: bool) -> int:
        lo, hi = contiguous_range(len(self), rank, world_size)
        return hi - lo


def _cut(windows: Iterator[Block], bounds: np.ndarray, start_step: int, position: int) -> Iterator[Block]:
    """Batches rows [bounds[s], bounds[s+1]) for s >= start_step out of consecutive
    windows whose first row is local row `position`."""
    current: Block | None = None
    used = 0  # rows of `current` already handed out

    def take_rows(count: int) -> list[Block]:
        nonlocal current, used
        parts = []
        while count > 0:
            if current is None or used == size_of(current):
                current, used = next(windows), 0
            size = min(count, size_of(current) - used)
            parts.append(slice_rows(current, used, used + size))
            used, count = used + size, count - size
        return parts

    take_rows(int(bounds[start_step]) - position)  # a resume starts inside its window
    for step in range(start_step, len(bounds) - 1):
        yield concat(take_rows(int(bounds[step + 1] - bounds[step])))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
