"""Fixtures of the unit tests."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    """A throwaway HOME and raysweep state dir (cluster tokens, launcher copies):
    nothing touches the user's ~ or ~/.ray."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAYSWEEP_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"
