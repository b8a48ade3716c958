"""Writes this project's data: two Parquet folders of 8 features and a 0/1 label."""

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

root = Path(sys.argv[1] if len(sys.argv) > 1 else "data")
rng = np.random.default_rng(0)
for split, rows in (("train", 512), ("validation", 128)):
    x = rng.normal(size=(rows, 8)).astype(np.float32)
    label = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    (root / split).mkdir(parents=True, exist_ok=True)
    table = pa.table({**{f"x_{i}": x[:, i] for i in range(8)}, "label": label})
    pq.write_table(table, root / split / "part-0.parquet")
