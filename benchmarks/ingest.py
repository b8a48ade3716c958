"""ingest: the memory loader (reader + shard iterator) against pyarrow iter_batches + torch.from_numpy."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import Bench, scratch_dir, write_ingest_data
from benchmarks.core import interleave, md_table, on_median, paired, spread_text
from benchmarks.entries import ENTRIES
from raysweep.data.arrays import ArraySet
from raysweep.data.columns import Layout
from raysweep.worker.context import TrainContext

RAYSWEEP_READER = "raysweep reader + shard iterator"



def ingest_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["reader", "rows/s (median)", "GB/s", "rate ratio: median (min-max; IQR; pairs)"],
                      [[x["name"], f"{x['rows_per_s']:.3g}", x["gb_per_s"], spread_text(x["rate_ratio"])]
                       for x in r["rows"]]),
            f"{r['data_rows']} rows x 64 float32 + int64 label = {r['data_gb']:.2f} GB in memory "
            f"({r['parquet_gb_on_disk']:.2f} GB Parquet), batch {r['batch_size']}. {r['pairs']} interleaved "
            "rounds: each reads the data once with every reader, the order flipping every round; rate ratio = the "
            "pyarrow reader's seconds / the reader's in the same round; the target is decided on the median.", ""]


def rate_rows(seconds: dict[str, list[float]], baseline: str, rows: int, nbytes: int) -> list[dict[str, Any]]:
    """Per reader: median rows/s and GB/s, and the per-pair rate ratio against `baseline`."""
    return [{"name": name, "rows_per_s": rows / statistics.median(v), "gb_per_s": nbytes / statistics.median(v) / 1e9,
             "rate_ratio": paired(seconds[baseline], v), "seconds": [round(x, 3) for x in v]}
            for name, v in seconds.items()]


@ENTRIES.register("ingest", target=">= 0.8x the pyarrow rate (median of >= 5 interleaved pairs)", table=ingest_table,
                  met=lambda r: on_median(next(x["rate_ratio"] for x in r["rows"] if x["name"] == RAYSWEEP_READER),
                                          lambda m: m >= 0.8))
def bench_ingest(bench: Bench, batch_size: int = 1024) -> dict[str, Any]:
    import pyarrow.parquet as pq

    pairs, gigabytes = bench.args.pairs, bench.args.ingest_gb
    tmp = Path(scratch_dir(prefix="bench-ingest-"))
    bench.stage("write the data")
    files, rows = write_ingest_data(tmp, gigabytes * 1e9)
    features = [f"px_{j}" for j in range(64)]
    nbytes = rows * (64 * 4 + 8)

    def raysweep_reader() -> int:
        train = ArraySet.from_parquet(files, Layout.scalars(features, "label", "int64"))
        ctx, _ = TrainContext.in_process(train, train, {}, num_epochs=1)
        return sum(min(len(x), len(y)) for x, y in ctx.train_batches(0, batch_size))

    def pyarrow_reader() -> int:
        count = 0
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=[*features, "label"]):
                matrix = np.stack([batch.column(j).to_numpy() for j in range(64)], axis=1)
                x, y = torch.from_numpy(matrix), torch.from_numpy(batch.column(64).to_numpy())
                count += min(len(x), len(y))
        return count

    def one_batch() -> int:
        x, y = torch.zeros(batch_size, 64), torch.zeros(batch_size, dtype=torch.int64)
        count = 0
        while count < rows:
            batch = (x, y)
            count += len(batch[1])
        return count

    readers = {"pyarrow iter_batches + torch.from_numpy": pyarrow_reader, RAYSWEEP_READER: raysweep_reader,
               "one preallocated batch repeated": one_batch}

    def timed(reader: Any) -> Any:
        def run(i: int) -> float:
            started = time.perf_counter()
            assert reader() >= rows - batch_size
            return time.perf_counter() - started
        return run

    seconds = interleave(pairs, {name: timed(reader) for name, reader in readers.items()})
    out = rate_rows(seconds, "pyarrow iter_batches + torch.from_numpy", rows, nbytes)
    on_disk = sum(os.path.getsize(f) for f in files)
    for path in files:
        os.remove(path)
    return {"entry": "ingest", "baseline": "pyarrow iter_batches + torch.from_numpy", "rows": out,
            "data_rows": rows, "data_gb": nbytes / 1e9, "parquet_gb_on_disk": on_disk / 1e9,
            "batch_size": batch_size, "pairs": pairs}

