"""stream, stream_s3: the stream loader against pyarrow's dataset scanner, local and on an S3 server."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    ROW_BYTES,
    STREAM_BATCH,
    STREAM_LOADER,
    STREAM_PYARROW,
    STREAM_THREADS,
    STREAM_WINDOW,
    Bench,
    resolved,
    scratch_dir,
    stream_size,
    stream_split,
    write_stream_data,
)
from benchmarks.core import interleave, md_table, on_median, spread_text
from benchmarks.entries import ENTRIES
from benchmarks.ingest import rate_rows


def stream_table(r: dict[str, Any]) -> list[str]:
    where = "on the SeaweedFS S3 server (127.0.0.1)" if r["storage"] == "s3" else "local, in the page cache"
    return [*md_table(["reader", "rows/s (median)", "GB/s", "rate ratio: median (min-max; IQR; pairs)"],
                      [[x["name"], f"{x['rows_per_s']:.3g}", x["gb_per_s"], spread_text(x["rate_ratio"])]
                       for x in r["rows"]]),
            f"{r['data_rows']} rows x 64 float32 + int64 label = {r['data_gb']:.2f} GB decoded "
            f"({r['parquet_gb']:.2f} GB Parquet, {r['files']} files, row groups of 65536 rows, {where}); "
            f"1 rank, window {r['window_rows']}, prefetch {r['prefetch_windows']}, batch {r['batch_size']}; "
            f"{r['threads']} threads: the loader's read_threads = pyarrow's CPU and I/O pools (both readers). "
            + (f"{r['pairs']} interleaved pairs (one epoch each, the order flipping every pair); rate ratio = "
               "pyarrow's seconds / the reader's in the same pair; the target is decided on the median." if "pairs" in r
               else f"Medians of {r.get('repeats')} (recorded before interleaved pairs)."), ""]


def stream_vs_pyarrow(bench: Bench, entry: str, gigabytes: float, s3: bool) -> dict[str, Any]:
    """One epoch of the stream loader (rank 0 of 1) against pyarrow's dataset scanner
    with the same conversion (raysweep.data.arrays.to_matrix) on the same files,
    alternating, same thread count."""
    import contextlib
    import shutil

    import pyarrow.dataset as ds

    from benchmarks.data_support import arrow_threads, s3_environment
    from raysweep.data.arrays import to_matrix
    from raysweep.data.storage import filesystem
    from tests.support.seaweed import S3Server

    pairs, threads = bench.args.pairs, STREAM_THREADS
    tmp = Path(scratch_dir(prefix=f"bench-{entry}-"))
    try:
        bench.stage("write the data")
        files, rows = write_stream_data(tmp / "data", gigabytes)
        parquet = sum(os.path.getsize(f) for f in files)
        with contextlib.ExitStack() as stack:
            root = str(tmp / "data")
            if s3:
                bench.stage("start the S3 server and upload")
                server = stack.enter_context(S3Server(tmp / "s3", stop_timeout=2))
                server.upload(tmp / "data", "bench/data")
                for path in files:
                    os.remove(path)  # read from the server only
                stack.enter_context(s3_environment(server))
                root = "s3://bench/data"
            data = resolved(root)
            features = list(data.features)
            split = stream_split(data, threads=threads)
            fs, _ = filesystem(data.train_files[0])
            paths = [filesystem(f)[1] for f in data.train_files]
            assert data.num_train_rows == rows

            def stream_loader(epoch: int) -> int:
                return sum(min(len(x), len(y)) for x, y in split.train_batches(0, 1, STREAM_BATCH, 0, epoch))

            def pyarrow_dataset(epoch: int) -> int:
                count = 0
                dataset = ds.dataset(paths, filesystem=fs, format="parquet")
                for batch in dataset.to_batches(columns=[*features, "label"], batch_size=STREAM_BATCH,
                                                use_threads=True):
                    matrix = np.empty((batch.num_rows, len(features)), dtype=np.float32)
                    labels = np.empty(batch.num_rows, dtype=np.int64)
                    to_matrix(batch, features, "label", matrix, labels)
                    x, y = torch.from_numpy(matrix), torch.from_numpy(labels)
                    count += min(len(x), len(y))
                return count

            readers = {STREAM_PYARROW: pyarrow_dataset, STREAM_LOADER: stream_loader}

            def timed(name: str) -> Any:
                def run(epoch: int) -> float:
                    started = time.perf_counter()
                    seen = readers[name](epoch)
                    took = time.perf_counter() - started
                    if seen != rows:
                        raise RuntimeError(f"{name}: {seen} rows in an epoch, the files hold {rows}")
                    return took
                return run

            with arrow_threads(threads):
                seconds = interleave(pairs, {name: timed(name) for name in readers})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = rate_rows(seconds, STREAM_PYARROW, rows, rows * ROW_BYTES)
    return {"entry": entry, "baseline": STREAM_PYARROW, "rows": out, "storage": "s3" if s3 else "local",
            "data_rows": rows, "data_gb": rows * ROW_BYTES / 1e9, "parquet_gb": parquet / 1e9, "files": len(files),
            "window_rows": STREAM_WINDOW, "prefetch_windows": 2, "batch_size": STREAM_BATCH, "threads": threads,
            "pairs": pairs, "quick": bench.args.quick}


def stream_met(r: dict[str, Any]) -> bool | None:
    """The stream loader's median rate ratio >= 0.9 (None with under 5 pairs)."""
    return on_median(next(x["rate_ratio"] for x in r["rows"] if x["name"] == STREAM_LOADER), lambda m: m >= 0.9)


@ENTRIES.register("stream", target=">= 0.9x pyarrow's dataset scanner (local Parquet, same threads; median "
                  "of >= 5 interleaved pairs)",
                  table=stream_table, met=stream_met)
def bench_stream(bench: Bench) -> dict[str, Any]:
    return stream_vs_pyarrow(bench, "stream", stream_size(bench, "stream_gb"), s3=False)


@ENTRIES.register("stream_s3", target=">= 0.9x pyarrow's dataset scanner on the same s3:// data (median of >= 5 "
                  "interleaved pairs)",
                  table=stream_table, met=stream_met)
def bench_stream_s3(bench: Bench) -> dict[str, Any]:
    return stream_vs_pyarrow(bench, "stream_s3", stream_size(bench, "s3_gb"), s3=True)


