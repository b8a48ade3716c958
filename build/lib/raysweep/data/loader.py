"""Which loader a run uses (`data.loader`), and what each worker is handed for it.

memory: the driver reads the used columns once and puts them in Ray's object store;
every worker maps them. stream: nothing is read on the driver; each rank reads its
own (file, row group) units from storage (`raysweep.data.stream`).
"""

from __future__ import annotations

from typing import Any

import ray

from raysweep.data.arrays import load_arrays
from raysweep.data.files import ResolvedData
from raysweep.data.stream import StreamSource

AUTO_MEMORY_FRACTION = 0.25
"""`auto` picks memory when the decoded columns fit this share of the smallest
node's object store (Ray's default store is 30 % of a node's RAM)."""


def choose_loader(setting: str, data: ResolvedData, smallest_store: float | None) -> tuple[str, str]:
    """(memory | stream, the reason in words) for `data.loader: setting`."""
    size = f"{data.decoded_bytes / 2**20:.1f} MiB decoded"
    if setting != "auto":
        return setting, f"data.loader: {setting} ({size})"
    if smallest_store is None:
        return "stream", f"{size}; no node reports its object store size"
    limit = AUTO_MEMORY_FRACTION * smallest_store
    if data.decoded_bytes <= limit:
        return "memory", (f"{size} fits {AUTO_MEMORY_FRACTION:.0%} of the smallest node's object store "
                          f"({smallest_store / 2**30:.2f} GiB)")
    return "stream", (f"{size} is over {AUTO_MEMORY_FRACTION:.0%} of the smallest node's object store "
                      f"({smallest_store / 2**30:.2f} GiB)")


def stream_sources(data: ResolvedData) -> tuple[StreamSource, StreamSource]:
    """What each rank of a stream-loader run reads from: files and their row groups."""
    return (StreamSource(data.train_files, data.train_units, data.layout),
            StreamSource(data.validation_files, data.validation_units, data.layout))


def worker_data(loader: str, data: ResolvedData) -> Any:
    """The plan's `arrays`: an ObjectRef to the read columns (memory), or the stream sources."""
    if loader == "stream":
        return stream_sources(data)
    return ray.put(load_arrays(data))
