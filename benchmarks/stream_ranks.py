"""stream_ranks: 2 rank processes streaming their halves at once, against one streaming all."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROW_BYTES,
    STREAM_BATCH,
    STREAM_WINDOW,
    Bench,
    child_job,
    resolved,
    scratch_dir,
    stream_size,
    write_stream_data,
)
from benchmarks.core import md_table
from benchmarks.entries import ENTRIES

STREAM_RANK_LAYOUTS = {  # name: (reader, processes)
    "stream loader, 1 rank, all rows": ("stream", 1),
    "stream loader, 2 ranks, half each": ("stream", 2),
    "control: pyarrow iter_batches, 1 process, all files": ("pyarrow", 1),
    "control: pyarrow iter_batches, 2 processes, half the files each": ("pyarrow", 2),
}


def ranks_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["processes", "aggregate rows/s", "per-process rows/s", "CPU s per M rows", "cores used",
                       "speed-up", "every row once"],
                      [[x["name"], f"{x['rows_per_s']:.3g}", f"{x['per_rank_rows_per_s']:.3g}",
                        x["cpu_s_per_mrow"], x["cores_used"], x["speedup"], x["every_row_once"]] for x in r["rows"]]),
            f"{r['data_rows']} rows ({r['data_gb']:.2f} GB decoded, {r['files']} local files in the page cache), "
            f"{r['epochs']} epochs per timed run; every process started with the others, timed from a common go "
            "after its imports and a 2-batch warm-up; read_threads 1, pyarrow CPU and I/O pools 1 thread, torch "
            f"1 thread; window {r['window_rows']}, batch {r['batch_size']}; {os.cpu_count()} CPUs (shared with "
            "other work; cores used: the processes' CPU time / wall time). Speed-up: against the same reader "
            "in 1 process; the pyarrow rows are a control for what the machine allows, not the target. "
            f"Medians of {r['repeats']}.", ""]


@ENTRIES.register(
    "stream_ranks",
    method=(
        "not interleaved pairs: medians of --repeats rounds of the four layouts in turn (a speed-up "
        "against the same reader in 1 process, not a baseline)"
    ), target="2 ranks' aggregate rows/s >= 1.6x one rank's", table=ranks_table,
                  met=lambda r: next(x["speedup"] for x in r["rows"]
                                     if x["name"] == "stream loader, 2 ranks, half each") >= 1.6)
def bench_stream_ranks(bench: Bench, epochs: int = 4) -> dict[str, Any]:
    import shutil

    from benchmarks.data_support import add_up, column_sums, run_together, sums_match

    repeats = bench.args.repeats
    tmp = Path(scratch_dir(prefix="bench-stream-ranks-"))
    try:
        bench.stage("write the data")
        files, rows = write_stream_data(tmp / "data", stream_size(bench, "ranks_gb"))
        data = resolved(str(tmp / "data"))
        expected = column_sums(data.train_files, "px_0", "label")
        settings = {"window_rows": STREAM_WINDOW, "prefetch_windows": 2, "read_threads": 1}
        extra = {"arrow_threads": 1, "torch_threads": 1, "warmup": True, "epochs": epochs}
        rates: dict[str, list[float]] = {name: [] for name in STREAM_RANK_LAYOUTS}
        per_rank: dict[str, list[float]] = {name: [] for name in STREAM_RANK_LAYOUTS}
        cpu: dict[str, list[float]] = {name: [] for name in STREAM_RANK_LAYOUTS}
        cores: dict[str, list[float]] = {name: [] for name in STREAM_RANK_LAYOUTS}
        complete: dict[str, bool] = {name: True for name in STREAM_RANK_LAYOUTS}
        for repeat in range(repeats):
            for name, (reader, world) in STREAM_RANK_LAYOUTS.items():
                bench.stage(name)
                jobs = [child_job(data, r, world, settings, reader=reader, epoch=repeat * epochs, **extra)
                        for r in range(world)]
                results = run_together(jobs)
                wall = max(x["end"] for x in results) - min(x["start"] for x in results)
                rates[name].append(rows * epochs / wall)
                per_rank[name].append(statistics.median(x["rows"] / (x["end"] - x["start"]) for x in results))
                cpu[name].append(sum(x["cpu_s"] for x in results) / (rows * epochs / 1e6))
                cores[name].append(sum(x["cpu_s"] for x in results) / wall)
                complete[name] = complete[name] and sums_match(add_up(results), expected, rows, epochs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = []
    for name, (reader, _) in STREAM_RANK_LAYOUTS.items():
        single = next(n for n, (r, w) in STREAM_RANK_LAYOUTS.items() if r == reader and w == 1)
        out.append({"name": name, "rows_per_s": statistics.median(rates[name]),
                    "per_rank_rows_per_s": statistics.median(per_rank[name]),
                    "cpu_s_per_mrow": statistics.median(cpu[name]), "cores_used": statistics.median(cores[name]),
                    "speedup": statistics.median(rates[name]) / statistics.median(rates[single]),
                    "every_row_once": complete[name], "samples_rows_per_s": [round(x) for x in rates[name]]})
    return {"entry": "stream_ranks", "baseline": "the stream loader, 1 rank streaming all rows", "rows": out,
            "data_rows": rows, "data_gb": rows * ROW_BYTES / 1e9, "files": len(files), "epochs": epochs,
            "window_rows": STREAM_WINDOW, "batch_size": STREAM_BATCH, "repeats": repeats, "quick": bench.args.quick}


