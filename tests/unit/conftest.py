from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from raysweep.data.arrays import ArraySet


@pytest.fixture(scope="session")
def digits() -> tuple[ArraySet, ArraySet]:
    """The digits in memory: 1,400 training and 397 validation rows."""
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return ArraySet.from_matrix(x[:1400], y[:1400]), ArraySet.from_matrix(x[1400:], y[1400:])
