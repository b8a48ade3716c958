"""Small Parquet files for the data-fingerprint tests (unit and S3 tiers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.data.columns import Layout
from raysweep.data.files import ResolvedData

ROWS = 100


def write(path: Path, change: float | None = None, rows: int = ROWS, **options: Any) -> None:
    """Plain encoding, no compression: one changed value keeps the file's size, and
    keeps its footer too unless it changes a column's min or max."""
    x = [float(i) for i in range(rows)]
    if change is not None:
        x[50] = change
    table = pa.table({"x": pa.array(x, pa.float64()), "y": pa.array([i % 3 for i in range(rows)], pa.int64())})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="none", use_dictionary=False, **options)


def resolved(train: list[str], validation: list[str]) -> ResolvedData:
    return ResolvedData(tuple(train), tuple(validation), Layout.scalars(["x"], "y", "int64"), 0, 0)
