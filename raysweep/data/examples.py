"""The example data set: scikit-learn's bundled digits written to Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def _write_split(features: np.ndarray, labels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {f"px_{i}": features[:, i].astype(np.float32) for i in range(features.shape[1])}
    columns["label"] = labels.astype(np.int64)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.table(columns), tmp)
    tmp.replace(path)


def write_digits_parquet(out: Path) -> tuple[int, int]:
    """1,797 8x8 digits, a fixed stratified 80/20 split (seed 0), pixels scaled to 0..1.

    Writes OUT/train/part-0.parquet and OUT/validation/part-0.parquet with columns
    px_0..px_63 (float32) and label (int64); returns the two row counts.
    """
    digits = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    _write_split(x_train, y_train, out / "train" / "part-0.parquet")
    _write_split(x_val, y_val, out / "validation" / "part-0.parquet")
    return len(y_train), len(y_val)
