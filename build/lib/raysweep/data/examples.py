"""The example data sets, written to Parquet from what installed packages ship
(nothing is downloaded):

- digits (tabular): scikit-learn's 8x8 digits as 64 float32 columns px_* + label;
- digits_tensor: the same images as one uint8 tensor column `image` [8, 8] + label;
- digits_png: the same images as PNG bytes (`png`, binary) + label, for a transform;
- text: the text of scikit-learn's data set descriptions (`sklearn/datasets/descr`)
  as variable-length token lists (`tokens`, list<int32>: UTF-8 bytes + 1, 0 is free
  for padding), one per line.

All digits splits are the same fixed, stratified 80/20 split (seed 0).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

VOCAB_SIZE = 257
"""Token ids of the text example: 0 (padding) and a UTF-8 byte + 1."""


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def _write_splits(out: Path, train: pa.Table, validation: pa.Table) -> tuple[int, int]:
    _write(train, out / "train" / "part-0.parquet")
    _write(validation, out / "validation" / "part-0.parquet")
    return train.num_rows, validation.num_rows


def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, validation images, train labels, validation labels): uint8 0..16, [n, 8, 8]."""
    digits = load_digits()
    images = digits.images.astype(np.uint8)
    return train_test_split(images, digits.target, test_size=0.2, random_state=0, stratify=digits.target)


def write_digits_parquet(out: Path) -> tuple[int, int]:
    """1,797 8x8 digits, pixels scaled to 0..1: OUT/{train,validation}/part-0.parquet with
    columns px_0..px_63 (float32) and label (int64); returns the two row counts."""
    x_train, x_val, y_train, y_val = _digits_split()

    def table(images: np.ndarray, labels: np.ndarray) -> pa.Table:
        flat = images.reshape(len(images), 64) / 16.0
        columns = {f"px_{i}": flat[:, i].astype(np.float32) for i in range(64)}
        return pa.table({**columns, "label": labels.astype(np.int64)})

    return _write_splits(out, table(x_train, y_train), table(x_val, y_val))


def image_column(images: np.ndarray) -> pa.FixedSizeListArray:
    """uint8 images [n, h, w] as fixed_size_list<fixed_size_list<uint8, w>, h>."""
    n, h, w = images.shape
    rows = pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1), pa.uint8()), w)
    return pa.FixedSizeListArray.from_arrays(rows, h)


def write_digits_tensor_parquet(out: Path) -> tuple[int, int]:
    """The digits as one tensor column: `image` (fixed_size_list<fixed_size_list<uint8, 8>, 8>,
    values 0..16) and label (int64)."""
    x_train, x_val, y_train, y_val = _digits_split()

    def table(images: np.ndarray, labels: np.ndarray) -> pa.Table:
        return pa.table({"image": image_column(images), "label": labels.astype(np.int64)})

    return _write_splits(out, table(x_train, y_train), table(x_val, y_val))


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 grayscale image as PNG bytes (Pillow)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_digits_png_parquet(out: Path) -> tuple[int, int]:
    """The digits as encoded images: `png` (binary: an 8x8 grayscale PNG, pixels 0..16
    scaled to 0..255) and label (int64)."""
    x_train, x_val, y_train, y_val = _digits_split()

    def table(images: np.ndarray, labels: np.ndarray) -> pa.Table:
        encoded = [png_bytes((image.astype(np.uint16) * 255 // 16).astype(np.uint8)) for image in images]
        return pa.table({"png": pa.array(encoded, pa.binary()), "label": labels.astype(np.int64)})

    return _write_splits(out, table(x_train, y_train), table(x_val, y_val))


def package_text() -> list[str]:
    """The non-empty lines of scikit-learn's data set descriptions, in file order."""
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "descr"
    lines: list[str] = []
    for path in sorted(folder.glob("*.rst")):
        lines += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if len(line.strip()) > 1]
    return lines


def encode(text: str) -> list[int]:
    """UTF-8 bytes + 1 (0 is padding)."""
    return [b + 1 for b in text.encode("utf-8")]


def write_text_parquet(out: Path) -> tuple[int, int]:
    """One row per line of `package_text()`: `tokens` (list<int32>, 2..~80 tokens);
    every 5th line is validation."""
    lines = package_text()
    tokens = [encode(line) for line in lines]

    def table(rows: list[list[int]]) -> pa.Table:
        return pa.table({"tokens": pa.array(rows, pa.list_(pa.int32()))})

    return _write_splits(out, table([t for i, t in enumerate(tokens) if i % 5]),
                         table([t for i, t in enumerate(tokens) if i % 5 == 0]))


def write_diabetes_parquet(out: Path) -> tuple[int, int]:
    """scikit-learn's diabetes regression set (442 patients, 10 features): a fixed 80/20
    split (seed 0), features and target standardized with the training split's mean and
    standard deviation: OUT/{train,validation}/part-0.parquet with columns f_0..f_9 and
    target (float32); returns the two row counts. A validation MSE of 1.0 is about what
    predicting the training mean scores."""
    from sklearn.datasets import load_diabetes

    features, target = load_diabetes(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(features, target, test_size=0.2, random_state=0)
    x_mean, x_std = x_train.mean(axis=0), x_train.std(axis=0)
    y_mean, y_std = y_train.mean(), y_train.std()

    def table(x: np.ndarray, y: np.ndarray) -> pa.Table:
        scaled = (x - x_mean) / x_std
        columns = {f"f_{i}": scaled[:, i].astype(np.float32) for i in range(scaled.shape[1])}
        return pa.table({**columns, "target": ((y - y_mean) / y_std).astype(np.float32)})

    return _write_splits(out, table(x_train, y_train), table(x_val, y_val))


EXAMPLES = {
    "digits": write_digits_parquet,
    "digits_tensor": write_digits_tensor_parquet,
    "digits_png": write_digits_png_parquet,
    "text": write_text_parquet,
    "diabetes": write_diabetes_parquet,
}
"""Folder name under data/ -> writer."""
