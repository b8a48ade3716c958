"""Support for `scripts/bench.py`'s data entries (stream, stream_s3, stream_ranks,
stream_memory, fingerprint): small Parquet files, the AWS environment of an
`S3Server`, pyarrow's thread counts, and streaming epochs in child processes.

Run as a module it is one streaming process (a rank, or the memory-capped epoch):

    python -m benchmarks.data_support '{"source": {...}, "rank": 0, "world_size": 1, ...}'

It imports the stream loader, prints one JSON line (`ready`, its RSS after the
imports), waits for a line on stdin (so several ranks start together), streams one
epoch, and prints one JSON line: rows, sums of the first feature and of the label
(every row once: they equal the files' sums), wall-clock start and end, and its peak
RSS (VmHWM). `run_together` starts such processes.

Imports only the standard library at module level (the child's RSS after imports is
what the stream loader itself brings in).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raysweep.data.stream import StreamSource, StreamSplit
    from tests.support.seaweed import S3Server


def status_kb(field: str, pid: int | str = "self") -> int:
    """A /proc/PID/status field in kB (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# ---------------------------------------------------------------- environment


@contextlib.contextmanager
def arrow_threads(count: int) -> Iterator[None]:
    """pyarrow's CPU and I/O thread pools set to `count` threads, restored after."""
    import pyarrow as pa

    cpu, io = pa.cpu_count(), pa.io_thread_count()
    pa.set_cpu_count(count)
    pa.set_io_thread_count(count)
    try:
        yield
    finally:
        pa.set_cpu_count(cpu)
        pa.set_io_thread_count(io)


@contextlib.contextmanager
def s3_environment(server: S3Server) -> Iterator[None]:
    """os.environ with the server's AWS variables (and no other AWS_*), restored after."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(server.env())
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[name]
        os.environ.update(saved)


# ---------------------------------------------------------------- data


def write_small_files(root: Path, count: int, rows: int = 64, features: int = 8) -> list[str]:
    """`count` small Parquet files (`features` float32 columns px_* + int64 label) under
    root/train, and one under root/validation; the train paths."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "validation").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count + 1):
        table = pa.table({**{f"px_{j}": rng.random(rows, dtype=np.float32) for j in range(features)},
                          "label": rng.integers(0, 10, rows)})
        path = root / "validation" / "part-0.parquet" if i == count else root / "train" / f"part-{i:05d}.parquet"
        pq.write_table(table, path)
        paths.append(str(path))
    return paths[:-1]


def column_sums(files: Iterable[str], feature: str, label: str) -> tuple[float, int]:
    """(sum of `feature` as float64, sum of `label`) over the files: what an epoch that
    saw every row once adds up to. Reads one column pair of one file at a time."""
    import numpy as np

    from raysweep.data.storage import open_parquet

    total, labels = 0.0, 0
    for uri in files:
        table = open_parquet(uri).read(columns=[feature, label])
        total += float(table.column(0).to_numpy().sum(dtype=np.float64))
        labels += int(table.column(1).to_numpy().sum())
    return total, labels


def sums_match(seen: Mapping[str, Any], expected: tuple[float, int], rows: int, epochs: int = 1) -> bool:
    """Whether `epochs` epochs' rows and sums (or several ranks' added up) are the
    files' times `epochs`: every row once per epoch."""
    feature, label = expected[0] * epochs, expected[1] * epochs
    return (seen["rows"] == rows * epochs and seen["label_sum"] == label
            and abs(seen["feature_sum"] - feature) <= 1e-9 * max(abs(feature), 1.0))


def add_up(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"rows": sum(r["rows"] for r in results), "feature_sum": sum(r["feature_sum"] for r in results),
            "label_sum": sum(r["label_sum"] for r in results)}


def source_job(source: StreamSource) -> dict[str, Any]:
    """A StreamSource as JSON (for a child's command line)."""
    layout = source.layout
    assert layout.matrix and layout.label is not None, "the data benchmarks stream scalar features + a label"
    return {"files": list(source.files), "units": [list(u) for u in source.units],
            "features": list(layout.features), "label": layout.label,
            "label_dtype": layout.columns[-1].dtype}


def source_from_job(job: Mapping[str, Any]) -> StreamSource:
    from raysweep.data.columns import Layout
    from raysweep.data.stream import StreamSource

    return StreamSource(tuple(job["files"]), tuple((int(a), int(b), int(c)) for a, b, c in job["units"]),
                        Layout.scalars(job["features"], job["label"], job["label_dtype"]))


# ---------------------------------------------------------------- streaming


def stream_epoch(split: StreamSplit, rank: int, world_size: int, batch_size: int, seed: int = 0,
                 epoch: int = 0, check: bool = True) -> dict[str, Any]:
    """Consume one epoch of `rank`'s batches: rows (and, with `check`, the sums of the
    first feature and of the label)."""
    import numpy as np

    rows, feature, label = 0, 0.0, 0
    for x, y in split.train_batches(rank, world_size, batch_size, seed, epoch):
        rows += min(len(x), len(y))
        if check:
            feature += float(x.numpy()[:, 0].sum(dtype=np.float64))
            label += int(y.numpy().sum())
    return {"rows": rows, "feature_sum": feature, "label_sum": label}


def pyarrow_epoch(files: Sequence[str], features: Sequence[str], label: str, batch_size: int,
                  check: bool = True, limit: int | None = None) -> dict[str, Any]:
    """The control reader: ParquetFile.iter_batches over `files` in order, each batch
    through the loader's conversion (to_matrix) into torch tensors; `limit` batches at most."""
    import numpy as np
    import torch

    from raysweep.data.arrays import label_dtype, to_matrix
    from raysweep.data.storage import open_parquet

    rows, feature, labels_sum, batches = 0, 0.0, 0, 0
    for uri in files:
        parquet = open_parquet(uri)
        dtype = label_dtype(parquet.schema_arrow, label)
        for batch in parquet.iter_batches(batch_size=batch_size, columns=[*features, label]):
            matrix = np.empty((batch.num_rows, len(features)), dtype=np.float32)
            labels = np.empty(batch.num_rows, dtype=dtype)
            to_matrix(batch, list(features), label, matrix, labels)
            x, y = torch.from_numpy(matrix), torch.from_numpy(labels)
            rows += min(len(x), len(y))
            if check:
                feature += float(matrix[:, 0].sum(dtype=np.float64))
                labels_sum += int(labels.sum())
            batches += 1
            if limit is not None and batches >= limit:
                return {"rows": rows, "feature_sum": feature, "label_sum": labels_sum}
    return {"rows": rows, "feature_sum": feature, "label_sum": labels_sum}


def child(job: Mapping[str, Any]) -> None:
    """One streaming process (see the module docstring). Job keys: source, rank,
    world_size, batch_size, settings (StreamSettings' fields); optional: epoch (first
    epoch), epochs (how many, timed together), reader ("stream", or "pyarrow": the
    control, files[rank::world_size] in order), warmup (stream a few batches of another
    epoch before `ready`: the first batch's one-time costs out of the timing),
    arrow_threads, torch_threads, check."""
    import pyarrow as pa
    import torch

    from raysweep.data.shards import StreamSettings
    from raysweep.data.stream import StreamSplit

    if job.get("arrow_threads"):
        pa.set_cpu_count(job["arrow_threads"])
        pa.set_io_thread_count(job["arrow_threads"])
    if job.get("torch_threads"):
        torch.set_num_threads(job["torch_threads"])
    source = job["source"]
    rank, world, batch, check = job["rank"], job["world_size"], job["batch_size"], job.get("check", True)
    split = StreamSplit(source_from_job(source), StreamSettings(**job["settings"]))

    def epoch_of(epoch: int, limit: int | None = None) -> dict[str, Any]:
        if job.get("reader", "stream") == "pyarrow":
            return pyarrow_epoch(source["files"][rank::world], source["features"], source["label"], batch, check,
                                 limit)
        if limit is None:
            return stream_epoch(split, rank, world, batch, job.get("seed", 0), epoch, check)
        batches = split.train_batches(rank, world, batch, job.get("seed", 0), epoch)
        for _, _ in zip(range(limit), batches, strict=False):
            pass
        batches.close()  # type: ignore[attr-defined]
        return {}

    imported = status_kb("VmRSS")
    warmup = time.time()
    if job.get("warmup"):
        epoch_of(10**6, limit=2)
    ready = {"ready": True, "rss_after_imports_kb": imported, "warmup_s": time.time() - warmup}
    print(json.dumps(ready), flush=True)
    sys.stdin.readline()  # "go": every child of run_together starts at once
    started, cpu = time.time(), os.times()
    seen: dict[str, Any] = {"rows": 0, "feature_sum": 0.0, "label_sum": 0}
    first = job.get("epoch", 0)
    for epoch in range(first, first + job.get("epochs", 1)):
        for key, value in epoch_of(epoch).items():
            seen[key] += value
    ended, used = time.time(), os.times()
    print(json.dumps({**seen, "start": started, "end": ended, "rank": rank,
                      "cpu_s": used.user + used.system - cpu.user - cpu.system,
                      "peak_rss_kb": status_kb("VmHWM"), "rss_end_kb": status_kb("VmRSS"),
                      "arrow_allocated_bytes": pa.total_allocated_bytes(),
                      "arrow_pool": pa.default_memory_pool().backend_name,
                      "pandas_imported": "pandas" in sys.modules}), flush=True)


def run_together(jobs: Sequence[Mapping[str, Any]], timeout: float = 600.0) -> list[dict[str, Any]]:
    """Start one child per job, wait until all are ready (imports done), start them
    together, and return each one's ready line merged with its result. Children still
    running after `timeout` seconds are killed (and this raises)."""
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.data_support", json.dumps(job)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for job in jobs]

    def kill_all() -> None:
        for p in procs:
            if p.poll() is None:
                p.kill()

    watchdog = threading.Timer(timeout, kill_all)
    watchdog.start()
    try:
        ready = [_line(p) for p in procs]
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [{**r, **_line(p)} for r, p in zip(ready, procs, strict=True)]
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"streaming child {p.pid} exited with status {p.returncode}")
        return results
    finally:
        watchdog.cancel()
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def _line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"streaming child {proc.pid} ended (status {proc.returncode}) without a result; "
                           "see its stderr above")
    return dict(json.loads(line))


if __name__ == "__main__":
    child(json.loads(sys.argv[1]))
