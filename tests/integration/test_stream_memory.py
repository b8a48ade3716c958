"""A worker's memory is bounded by the stream loader's window and prefetch depth, not
by the data set: streaming 4x the cap of data raises the process's peak resident
memory by less than the cap (measured in a fresh process, no Ray)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES, ROWS_PER_FILE, FILES = 64, 200_000, 8  # 8 x 200k x 65 x 4 B = 416 MB decoded
CAP_BYTES = 99 * 2**20  # a quarter of the decoded training set (streamed with the default settings)

STREAM_ONE_EPOCH = """
import json, shutil, sys
from pathlib import Path
from raysweep.config.spec import DataSpec
from raysweep.data.files import resolve_data
from raysweep.data.loader import stream_sources
from raysweep.data.shards import StreamSettings
from raysweep.data.stream import StreamSplit

def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1]) * 1024

folder = sys.argv[1]
validation = Path(folder).with_name(Path(folder).name + "-validation")  # (its own: check refuses shared files)
validation.mkdir(exist_ok=True)
shutil.copyfile(sorted(Path(folder).glob("*.parquet"))[0], validation / "part-0.parquet")
data = resolve_data(DataSpec(train=folder, validation=str(validation), features=["f*"], label="label"), "spec")
split = StreamSplit(stream_sources(data)[0], StreamSettings())  # the defaults: 16,384-row windows, 2 ahead, 2 threads
next(split.train_batches(0, 1, 1024, 0, 0))  # threads, file handles and first reads set up
before = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from here
rows = sum(len(y) for _, y in split.train_batches(0, 1, 1024, 0, 1))
print(json.dumps({"rows": rows, "increase": status("VmHWM") - before, "decoded": split.source.num_rows * (4 * 64 + 8)}))
"""


def test_streaming_four_times_the_cap_stays_under_it(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(FILES):
        columns = {f"f{j}": rng.random(ROWS_PER_FILE, dtype=np.float32) for j in range(FEATURES)}
        columns["label"] = rng.integers(0, 10, ROWS_PER_FILE)
        pq.write_table(pa.table(columns), tmp_path / f"part-{i}.parquet", row_group_size=16384)
    done = subprocess.run([sys.executable, "-c", STREAM_ONE_EPOCH, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["rows"] == FILES * ROWS_PER_FILE, "the epoch saw every row"
    assert measured["decoded"] >= 4 * CAP_BYTES
    assert measured["increase"] < CAP_BYTES, f"peak grew by {measured['increase'] / 2**20:.1f} MiB"
