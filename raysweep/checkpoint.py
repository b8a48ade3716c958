"""Checkpoint files: written atomically, loaded without unpickling code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"


def save_state(state: dict[str, Any], directory: str | Path) -> Path:
    """Write `state` to directory/state.pt via a temp file and rename."""
    path = Path(directory) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(directory: str | Path) -> dict[str, Any]:
    """Load directory/state.pt with `weights_only=True`: a pickled payload is refused."""
    path = Path(directory) / STATE_FILE
    return torch.load(path, map_location="cpu", weights_only=True)
