"""Write the example data sets to Parquet, from data installed packages ship.

    python scripts/prepare_data.py [--out data/digits]    # the tabular digits only
    python scripts/prepare_data.py --all [--root data]    # + digits_tensor, digits_png, text

digits: scikit-learn's 1,797 8x8 images, a fixed stratified 80/20 split (seed 0):
OUT/train/part-0.parquet and OUT/validation/part-0.parquet, columns px_0..px_63
(float32, 0..1) and label (int64). The others: see raysweep/data/examples.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raysweep.data.examples import EXAMPLES, write_digits_parquet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/digits", help="where the tabular digits go")
    parser.add_argument("--all", action="store_true", help="write every example under --root")
    parser.add_argument("--root", default="data")
    args = parser.parse_args()
    if not args.all:
        num_train, num_val = write_digits_parquet(Path(args.out))
        print(f"wrote {num_train} train and {num_val} validation rows under {args.out}")
        return
    for name, write in EXAMPLES.items():
        num_train, num_val = write(Path(args.root) / name)
        print(f"{name}: wrote {num_train} train and {num_val} validation rows under {Path(args.root) / name}")


if __name__ == "__main__":
    main()
