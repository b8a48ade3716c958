"""Support for `scripts/bench.py`'s column-shape entries (`raysweep.data.columns`):

- columns_memory: host bytes per row of a uint8 image column (nested fixed_size_list
  and arrow.fixed_shape_tensor; tabular and named layouts) in the memory loader's
  `ArraySet`, against the column's Arrow size in the pyarrow table (and what a
  float32 upcast would take).
- columns_transform: one training epoch of PNG bytes decoded by a Pillow `transform`
  in the context's background threads, `transform_workers` 1 against 2 (with the
  host side alone and the bare decode in a thread pool as controls).
- columns_padding: padded `tokens` + `tokens_lengths` batches of a list<int32>
  column, raysweep's `Layout.read` / `deliver` (and the memory loader's batches)
  against hand-written pyarrow-to-torch pad loops over the same batches.

Each `bench_*` takes the script's context (`args.repeats`, `args.quick`) and returns
its JSON result; each `*_table` draws one as Markdown. Timings are the best of the
repeats (at least 3), the readers alternating in order; the data lives in a
temporary folder removed when the entry ends.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.core import md_table
from benchmarks.entries import ENTRIES
from raysweep.config.spec import DataSpec
from raysweep.data.arrays import ArraySet
from raysweep.data.columns import LENGTHS, Layout, slice_rows
from raysweep.data.files import build_layout
from raysweep.data.shards import train_batch_indices
from raysweep.worker.context import TrainContext
from raysweep.worker.feed import FeedSettings

# Sizes per run (--quick: a smoke run; its targets still decide).
SIZES = {"full": {"memory_rows": 300_000, "png_rows": 4096, "token_rows": 200_000},
         "quick": {"memory_rows": 20_000, "png_rows": 512, "token_rows": 20_000}}
IMAGE_SIDE = 8
PNG_SIDE, PNG_DISTINCT, PNG_BATCH = 128, 512, 64
TOKEN_MAX, TOKEN_BATCH, TOKEN_ROW_GROUP = 256, 256, 65536
MIN_REPEATS = 3


def size(bench: Any, key: str) -> int:
    return SIZES["quick" if bench.args.quick else "full"][key]


def repeats(bench: Any) -> int:
    return max(int(bench.args.repeats), MIN_REPEATS)


def layout_of(path: Path, **data: Any) -> Layout:
    """The layout a run builds for `data` (DataSpec fields) from the file's schema."""
    spec = DataSpec(train=str(path), validation=str(path), **data)
    return build_layout(spec, pq.read_schema(path), str(path), "bench")


def best_of(readers: dict[str, Callable[[], int]], rounds: int, expected: int,
            cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Seconds of each reader per round, the readers' order rotated every round; each
    must return `expected` (rows or batches seen). With `cpu`, each round's process
    CPU seconds / wall seconds (cores used) go there."""
    names = list(readers)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            started, cpu_started = time.perf_counter(), time.process_time()
            seen = readers[name]()
            seconds[name].append(time.perf_counter() - started)
            if cpu is not None:
                cpu.setdefault(name, []).append((time.process_time() - cpu_started) / seconds[name][-1])
            if seen != expected:
                raise RuntimeError(f"{name}: saw {seen}, expected {expected}")
    return seconds


# ---------------------------------------------------------------- columns_memory


def image_types() -> dict[str, Callable[[np.ndarray], pa.Array]]:
    """Arrow image column builders: uint8 [n, h, w] -> the column."""

    def nested(images: np.ndarray) -> pa.Array:
        n, h, w = images.shape
        rows = pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1), pa.uint8()), w)
        return pa.FixedSizeListArray.from_arrays(rows, h)

    def tensor(images: np.ndarray) -> pa.Array:
        n, h, w = images.shape
        storage = pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1), pa.uint8()), h * w)
        return pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.uint8(), [h, w]), storage)

    return {f"fixed_size_list<fixed_size_list<uint8, {IMAGE_SIDE}>, {IMAGE_SIDE}>": nested,
            f"fixed_shape_tensor(uint8, [{IMAGE_SIDE}, {IMAGE_SIDE}])": tensor}


MEMORY_LAYOUTS: dict[str, dict[str, Any]] = {
    "tabular (features: [image], label)": {"features": ["image"], "label": "label"},
    "named (columns: [image, label])": {"columns": ["image", "label"]}}


def memory_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["image type", "layout", "host B/row", "Arrow B/row", "ratio", "float32 B/row",
                       "planner B/row", "delivered", "values equal"],
                      [[x["arrow_type"], x["layout"], x["host_bytes_per_row"], x["arrow_bytes_per_row"],
                        x["ratio"], x["float32_bytes_per_row"], x["planner_bytes_per_row"], x["delivered"],
                        x["values_equal"]] for x in r["rows"]]),
            f"{r['data_rows']} rows of a {IMAGE_SIDE}x{IMAGE_SIDE} uint8 image + int64 label, read by "
            "ArraySet.from_parquet with the layout build_layout gives the spec. Host: the image entry of the "
            "ArraySet's block (nbytes / rows); Arrow: the column's nbytes in pyarrow.parquet.read_table / rows; "
            "float32: the same elements as float32 (the upcast the loader no longer does); planner: "
            "Column.row_bytes (what resolve_data's memory estimate uses).", ""]


def memory_met(r: dict[str, Any]) -> bool:
    return all(x["ratio"] == 1.0 and x["values_equal"] and x["host_dtype"] == "uint8" for x in r["rows"])


def bench_memory(bench: Any) -> dict[str, Any]:
    rows = size(bench, "memory_rows")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (rows, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    labels = rng.integers(0, 10, rows)
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-columns-memory-") as tmp:
        for index, (arrow_name, build) in enumerate(image_types().items()):
            path = Path(tmp) / f"images-{index}.parquet"
            pq.write_table(pa.table({"image": build(images), "label": labels}), path)
            arrow = pq.read_table(path, columns=["image"]).column("image")
            for layout_name, data in MEMORY_LAYOUTS.items():
                layout = layout_of(path, **data)
                started = time.perf_counter()
                arrays = ArraySet.from_parquet([str(path)], layout)
                read_s = time.perf_counter() - started
                host = arrays.block["image"]
                assert isinstance(host, np.ndarray)
                batch = arrays.take(slice(0, 4))
                delivered = batch["image"] if isinstance(batch, dict) else batch[0]
                column = next(c for c in layout.columns if c.name == "image")
                out.append({
                    "arrow_type": arrow_name, "layout": layout_name, "host_dtype": host.dtype.name,
                    "host_shape": list(host.shape), "host_bytes_per_row": host.nbytes / len(arrays),
                    "arrow_bytes_per_row": arrow.nbytes / rows, "ratio": host.nbytes / arrow.nbytes,
                    "float32_bytes_per_row": host.size * np.dtype(np.float32).itemsize / len(arrays),
                    "planner_bytes_per_row": column.row_bytes(),
                    "arrayset_bytes_per_row": arrays.nbytes / len(arrays),
                    "delivered": f"{delivered.dtype} {list(delivered.shape)}",
                    "values_equal": bool(np.array_equal(host, images)), "read_s": read_s})
    return {"entry": "columns_memory", "baseline": "the column's Arrow size (pyarrow table nbytes)",
            "rows": out, "data_rows": rows, "quick": bench.args.quick}


# ---------------------------------------------------------------- columns_transform


def png_images(count: int, side: int, distinct: int, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    """`count` RGB images [side, side, 3] (smooth waves + noise: PNG's filters and
    zlib have work to do) as PNG bytes, `distinct` of them repeated in turn; and the
    decoded pixels of the distinct ones."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side]
    pixels, encoded = [], []
    for i in range(min(count, distinct)):
        a, b = rng.uniform(0.02, 0.2, 2)
        wave = np.sin(x * a + i) * np.cos(y * b) * 100 + 128 + rng.normal(0, 6, (side, side))
        gray = np.clip(wave, 0, 255).astype(np.uint8)
        image = np.stack([gray, np.roll(gray, 3, axis=0), np.roll(gray, 5, axis=1)], axis=-1)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pixels.append(image)
        encoded.append(buffer.getvalue())
    return [encoded[i % len(encoded)] for i in range(count)], np.stack(pixels)


def decode_png(batch: dict[str, Any], rng: np.random.Generator | None) -> dict[str, Any]:
    """The benchmark's transform: every PNG decoded with Pillow into one uint8 tensor."""
    from PIL import Image

    return {"image": torch.from_numpy(np.stack([np.asarray(Image.open(io.BytesIO(data))) for data in batch["png"]]))}


TRANSFORM_1, TRANSFORM_2 = "raysweep, transform_workers=1", "raysweep, transform_workers=2"
HOST_ONLY = "host side alone (no transform: shuffle + deliver the bytes)"
POOL_1, POOL_2 = "control: decode alone, 1 thread", "control: decode alone, 2 threads"


def transform_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["reader", "epoch s (best)", "images/s", "speed-up", "cores used", "samples s"],
                      [[x["name"], x["epoch_s"], f"{x['images_per_s']:.4g}", x.get("speedup", "-"), x["cores_used"],
                        ", ".join(f"{s:.3f}" for s in x["samples"])] for x in r["rows"]]),
            f"{r['data_rows']} rows ({r['distinct_images']} distinct {r['side']}x{r['side']} RGB PNG images, "
            f"{r['png_bytes_per_image']:.0f} B each on average, {r['decoded_bytes_per_image']} B decoded) in a "
            f"binary column; named layout [png]; one training epoch of ctx.train_batches(0, {r['batch_size']}) "
            "with the transform decode_png (Pillow Image.open + np.asarray + np.stack). Speed-up: against the "
            "same reader with 1 thread; cores used: the process's CPU time / wall time in that epoch. Controls: "
            "the host side without a transform (the context's main thread), and decode_png mapped over the same "
            f"delivered batches by a ThreadPoolExecutor (what the machine allows). Best of {r['repeats']}, "
            f"alternating; {r['cpus']} CPUs (shared with other work; load average {r['load_before']} before, "
            f"{r['load_after']} after). The host side alone is {r['host_share']:.0%} of the 1-worker epoch (its "
            "shuffle, Ragged.take, runs on the context's main thread whatever transform_workers is). Decoded "
            f"epoch equals the source pixels: {r['decoded_equal']}.", ""]


def transform_met(r: dict[str, Any]) -> bool | None:
    """None with fewer than 2 CPUs: the target is for 2 cores."""
    if r["cpus"] < 2:
        return None
    return next(x["speedup"] for x in r["rows"] if x["name"] == TRANSFORM_2) >= 1.6


def bench_transform(bench: Any) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    count, rounds = size(bench, "png_rows"), repeats(bench)
    load_before = round(os.getloadavg()[0], 2)
    encoded, pixels = png_images(count, PNG_SIDE, PNG_DISTINCT)
    with tempfile.TemporaryDirectory(prefix="bench-columns-transform-") as tmp:
        path = Path(tmp) / "png.parquet"
        pq.write_table(pa.table({"png": pa.array(encoded, pa.binary())}), path)
        layout = layout_of(path, columns=["png"])
        train = ArraySet.from_parquet([str(path)], layout)

    def context(workers: int, transform: Any = decode_png) -> TrainContext:
        ctx, _ = TrainContext.in_process(train, train, {}, num_epochs=1, transform=transform)
        ctx.feed = FeedSettings(transform_workers=workers)
        return ctx

    # Correctness, untimed: the validation pass (in order) decodes to the source pixels.
    decoded = np.concatenate([b["image"].numpy() for b in context(2).validation_batches(PNG_BATCH)])
    decoded_equal = bool(np.array_equal(decoded, pixels[np.arange(count) % len(pixels)]))
    delivered = [layout.deliver(block) for block in train.train_blocks(0, 1, PNG_BATCH, 0, 0)]

    def raysweep_epoch(workers: int) -> Callable[[], int]:
        def run() -> int:
            return sum(len(b["image"]) for b in context(workers).train_batches(0, PNG_BATCH))
        return run

    def host_only() -> int:
        return sum(len(b["png"]) for b in context(1, None).train_batches(0, PNG_BATCH))

    def pool(threads: int) -> Callable[[], int]:
        def run() -> int:
            with ThreadPoolExecutor(threads) as executor:
                return sum(len(b["image"]) for b in executor.map(lambda b: decode_png(b, None), delivered))
        return run

    readers = {TRANSFORM_1: raysweep_epoch(1), TRANSFORM_2: raysweep_epoch(2), HOST_ONLY: host_only,
               POOL_1: pool(1), POOL_2: pool(2)}
    for reader in readers.values():  # warm-up (imports, first-use costs), untimed
        reader()
    cores: dict[str, list[float]] = {}
    seconds = best_of(readers, rounds, count, cores)
    single = {TRANSFORM_2: TRANSFORM_1, TRANSFORM_1: TRANSFORM_1, POOL_2: POOL_1, POOL_1: POOL_1}
    out = []
    for name, values in seconds.items():
        best = values.index(min(values))
        row: dict[str, Any] = {"name": name, "epoch_s": values[best], "images_per_s": count / values[best],
                               "cores_used": cores[name][best], "samples": [round(v, 4) for v in values]}
        if name in single:
            row["speedup"] = min(seconds[single[name]]) / min(values)
        out.append(row)
    return {"entry": "columns_transform", "baseline": TRANSFORM_1, "rows": out, "data_rows": count,
            "distinct_images": min(count, PNG_DISTINCT), "side": PNG_SIDE,
            "png_bytes_per_image": float(np.mean([len(b) for b in encoded])),
            "decoded_bytes_per_image": int(pixels[0].nbytes), "batch_size": PNG_BATCH,
            "host_share": min(seconds[HOST_ONLY]) / min(seconds[TRANSFORM_1]),
            "decoded_equal": decoded_equal, "cpus": len(os.sched_getaffinity(0)), "load_before": load_before,
            "load_after": round(os.getloadavg()[0], 2), "repeats": rounds, "quick": bench.args.quick}


# ---------------------------------------------------------------- columns_padding


Padded = tuple[torch.Tensor, torch.Tensor]


def pad_loop(array: pa.ListArray) -> Padded:
    """Hand-written: a preallocated [rows, longest] int32 array filled row by row from
    the list array's offsets and values; int64 lengths."""
    offsets = array.offsets.to_numpy()
    values = array.values.to_numpy()
    lengths = np.diff(offsets)
    out = np.zeros((len(array), int(lengths.max())), dtype=np.int32)
    for row, (start, length) in enumerate(zip(offsets[:-1].tolist(), lengths.tolist(), strict=True)):
        out[row, :length] = values[start:start + length]
    return torch.from_numpy(out), torch.from_numpy(lengths.astype(np.int64))


def pad_sequences(array: pa.ListArray) -> Padded:
    """Hand-written: torch.nn.utils.rnn.pad_sequence over torch.from_numpy row slices."""
    offsets = array.offsets.to_numpy()
    values = torch.from_numpy(array.values.to_numpy())
    rows = [values[start:stop] for start, stop in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
    padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=0)
    return padded, torch.from_numpy(np.diff(offsets).astype(np.int64))


HAND_PADS: dict[str, Callable[[pa.ListArray], Padded]] = {
    "hand: row loop into a preallocated array": pad_loop, "hand: torch pad_sequence": pad_sequences}
RAYSWEEP_PAD = "raysweep"
PAD_SOURCES = {
    "parquet": "Parquet file, in order: Layout.read per row group + deliver per batch, against "
               "ParquetFile.iter_batches",
    "memory": "in memory, in order: the memory loader's validation batches (ArraySet, no transform), against "
              "the same pyarrow table's to_batches",
    "shuffled": "in memory, a training epoch: the memory loader's ctx.train_batches, against pyarrow's "
                "Table.take of the same batch rows",
}


def padding_table(r: dict[str, Any]) -> list[str]:
    lines = md_table(["source", "reader", "ms/batch (best)", "speed vs fastest hand loop", "identical batches"],
                     [[x["source"], x["name"], x["ms_per_batch"], x["speed_ratio"],
                       f"{x['identical_batches']}/{x['batches']}"]
                      for x in r["rows"]])
    notes = "; ".join(f"{k}: {v}" for k, v in PAD_SOURCES.items())
    return [*lines, f"{r['data_rows']} rows of list<int32> tokens, lengths uniform in 1..{TOKEN_MAX} "
            f"({r['values']} values; Parquet row groups of {TOKEN_ROW_GROUP} rows), batches of {r['batch_size']} "
            f"({r['batches']} per epoch); every reader delivers tokens as int32 [batch, longest] padded with 0 and "
            f"int64 lengths. Sources: {notes}. Speed: the fastest hand loop's time per batch / this reader's, "
            f"per source. Identical: torch.equal on every batch of an untimed pass, against the row loop. Best "
            f"of {r['repeats']}, alternating; torch {r['torch_threads']} threads; {r['cpus']} CPUs (shared with "
            f"other work; load average {r['load_before']} before, {r['load_after']} after).", ""]


def padding_met(r: dict[str, Any]) -> bool:
    ours = [x for x in r["rows"] if x["name"] == RAYSWEEP_PAD]
    return all(x["speed_ratio"] >= 0.9 for x in ours) and all(
        x["identical_batches"] == x["batches"] for x in r["rows"])


def token_table(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, TOKEN_MAX + 1, rows)
    offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = rng.integers(1, 32000, int(offsets[-1]), dtype=np.int32)
    return pa.table({"tokens": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))})


def bench_padding(bench: Any) -> dict[str, Any]:
    rows, rounds = size(bench, "token_rows"), repeats(bench)
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="bench-columns-padding-") as tmp:
        path = Path(tmp) / "tokens.parquet"
        source = token_table(rows)
        pq.write_table(source, path, row_group_size=TOKEN_ROW_GROUP)
        layout = layout_of(path, columns=["tokens"])
        parquet = pq.ParquetFile(path)
        table = pq.read_table(path).combine_chunks()
        arrays = ArraySet(layout.read([table]), layout)
        ctx, _ = TrainContext.in_process(arrays, arrays, {}, num_epochs=1)
        epoch_rows = train_batch_indices(rows, 0, 1, TOKEN_BATCH, 0, 0)
        key = "tokens" + LENGTHS

        def raysweep_batches(which: str) -> Iterator[Padded]:
            if which == "parquet":
                for group in range(parquet.num_row_groups):
                    block = layout.read([parquet.read_row_group(group, columns=["tokens"])])
                    count = len(block["tokens"])
                    for start in range(0, count, TOKEN_BATCH):
                        batch = layout.deliver(slice_rows(block, start, min(start + TOKEN_BATCH, count)))
                        yield batch["tokens"], batch[key]
                return
            batches = ctx.validation_batches(TOKEN_BATCH) if which == "memory" else ctx.train_batches(0, TOKEN_BATCH)
            for batch in batches:
                yield batch["tokens"], batch[key]

        def hand_batches(which: str, pad: Callable[[pa.ListArray], Padded]) -> Iterator[Padded]:
            if which == "parquet":
                for record in parquet.iter_batches(batch_size=TOKEN_BATCH, columns=["tokens"]):
                    yield pad(record.column(0))
            elif which == "memory":
                for record in table.to_batches(max_chunksize=TOKEN_BATCH):
                    yield pad(record.column(0))
            else:
                for indices in epoch_rows:
                    yield pad(table.column(0).take(indices).combine_chunks())

        def counter(batches: Callable[[], Iterator[Padded]]) -> Callable[[], int]:
            return lambda: sum(1 for _ in batches())

        out = []
        for which in PAD_SOURCES:
            readers: dict[str, Callable[[], Iterator[Padded]]] = {
                RAYSWEEP_PAD: functools.partial(raysweep_batches, which),
                **{name: functools.partial(hand_batches, which, pad) for name, pad in HAND_PADS.items()}}
            # Untimed pass (also the warm-up): every reader's batches against the row loop's.
            reference = list(readers["hand: row loop into a preallocated array"]())
            identical: dict[str, int] = {}
            for name, batches in readers.items():
                got = list(batches())
                same = sum(len(got) == len(reference) and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                           and a[0].dtype == torch.int32 and a[1].dtype == torch.int64
                           for a, b in zip(got, reference, strict=False))
                identical[name] = same
            seconds = best_of({name: counter(batches) for name, batches in readers.items()}, rounds,
                              len(reference))
            hand = min(min(seconds[name]) for name in HAND_PADS)
            for name, values in seconds.items():
                out.append({"source": which, "name": name, "ms_per_batch": min(values) / len(reference) * 1e3,
                            "speed_ratio": hand / min(values), "identical_batches": identical[name],
                            "batches": len(reference),
                            "samples": [round(v, 4) for v in values]})
    return {"entry": "columns_padding", "baseline": "the fastest hand-written pad loop, per source", "rows": out,
            "data_rows": rows, "values": int(len(source.column(0).chunk(0).values)), "batch_size": TOKEN_BATCH,
            "batches": len(epoch_rows), "torch_threads": torch.get_num_threads(), "cpus": len(os.sched_getaffinity(0)),
            "load_before": load_before, "load_after": round(os.getloadavg()[0], 2), "repeats": rounds,
            "quick": bench.args.quick}


ENTRIES.register(
    "columns_memory",
    method=(
        "not interleaved pairs: bytes, not time"
    ), target="uint8 image column: host bytes/row == its Arrow bytes/row (ratio 1.0)",
                 table=memory_table, met=memory_met)(bench_memory)
ENTRIES.register(
    "columns_transform",
    method=(
        "not interleaved pairs: best of the repeats, the readers alternating in order"
    ), target="PNG decode epoch: transform_workers=2 >= 1.6x transform_workers=1",
                 table=transform_table, met=transform_met)(bench_transform)
ENTRIES.register(
    "columns_padding",
    method=(
        "not interleaved pairs: best of the repeats, the readers alternating in order"
    ), target="padded tokens + lengths >= 0.9x the hand-written pad loop's speed",
                 table=padding_table, met=padding_met)(bench_padding)
