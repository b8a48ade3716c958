"""Checkpoint files: written atomically, loaded without unpickling code."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"
DIGEST_FILE = "state.sha256"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose state file is missing, cut short or altered: never loaded."""


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return f"{digest.hexdigest()}  {path.stat().st_size}"


def save_state(state: dict[str, Any], directory: str | Path) -> Path:
    """Write `state` to directory/state.pt via a temp file and rename, then its
    sha256 and size (the proof that the file is complete) the same way."""
    path = Path(directory) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    marker = Path(directory) / DIGEST_FILE
    tmp_marker = marker.with_suffix(".tmp")
    tmp_marker.write_text(_digest(path))
    os.replace(tmp_marker, marker)
    return path


def load_state(directory: str | Path) -> dict[str, Any]:
    """Load directory/state.pt once its sha256 matches (a torn or altered file raises
    CorruptCheckpointError), with `weights_only=True`: a pickled payload is refused."""
    path = Path(directory) / STATE_FILE
    marker = Path(directory) / DIGEST_FILE
    if not path.is_file() or not marker.is_file():
        raise CorruptCheckpointError(
            f"checkpoint {directory} is incomplete: {'no ' + STATE_FILE if not path.is_file() else 'no ' + DIGEST_FILE}"
            " (its write was interrupted); not loaded")
    if _digest(path) != marker.read_text().strip():
        raise CorruptCheckpointError(
            f"checkpoint {directory} is incomplete: {STATE_FILE} does not match its sha256 "
            "(cut short or altered); not loaded")
    return torch.load(path, map_location="cpu", weights_only=True)
