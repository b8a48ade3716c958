"""Write scikit-learn's bundled digits (1,797 8x8 images) to Parquet.

    python scripts/prepare_data.py [--out data/digits]

A fixed, stratified 80/20 split (seed 0): OUT/train/part-0.parquet and
OUT/validation/part-0.parquet, columns px_0..px_63 (float32, 0..1) and label (int64).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def write_split(features: np.ndarray, labels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {f"px_{i}": features[:, i].astype(np.float32) for i in range(features.shape[1])}
    columns["label"] = labels.astype(np.int64)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.table(columns), tmp)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/digits")
    out = Path(parser.parse_args().out)
    digits = load_digits()
    x = digits.data / 16.0
    x_train, x_val, y_train, y_val = train_test_split(
        x, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    write_split(x_train, y_train, out / "train" / "part-0.parquet")
    write_split(x_val, y_val, out / "validation" / "part-0.parquet")
    print(f"wrote {len(y_train)} train and {len(y_val)} validation rows under {out}")


if __name__ == "__main__":
    main()
