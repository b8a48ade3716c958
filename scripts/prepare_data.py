"""Write scikit-learn's bundled digits (1,797 8x8 images) to Parquet.

    python scripts/prepare_data.py [--out data/digits]

A fixed, stratified 80/20 split (seed 0): OUT/train/part-0.parquet and
OUT/validation/part-0.parquet, columns px_0..px_63 (float32, 0..1) and label (int64).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raysweep.data.examples import write_digits_parquet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/digits")
    out = Path(parser.parse_args().out)
    num_train, num_val = write_digits_parquet(out)
    print(f"wrote {num_train} train and {num_val} validation rows under {out}")


if __name__ == "__main__":
    main()
