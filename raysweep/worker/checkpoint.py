"""Checkpoint files: written atomically and synced to disk, loaded without unpickling code.

A full checkpoint is one `state.pt` and its digest, written by rank 0. A sharded one
(FSDP, see raysweep.worker.parallel) is a torch.distributed.checkpoint folder:
each rank writes its shard files and `shards-RANK.sha256` (their digests) into its own
folder, which Ray Train merges into one checkpoint; rank 0 also writes DCP's
`.metadata` and `state.pt` (everything but the model and optimizer, with the world
size that saved it). It is loaded only when every rank's digest file is there and
every file matches: a save cut short anywhere is never loaded.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"
DIGEST_FILE = "state.sha256"
SHARDS_FILE = "shards-{rank}.sha256"
DCP_METADATA = ".metadata"
SHARDED = "__sharded__"
"""The key of a checkpoint dict whose model and optimizer state are FSDP shards
({"model": ..., "optimizer": ...} of DTensors, see raysweep.worker.parallel): every
rank saves its own part. In an opened checkpoint: the checked folder holding them."""


@dataclass(frozen=True)
class CheckpointSettings:
    """The spec's `checkpoint` section, as plain data: when a run keeps its state
    (the trainer's context) and which checkpoints Tune or Train keep."""

    every_epochs: int = 1
    every_steps: int | None = None
    """A mid-epoch checkpoint every this many steps (None: at epoch ends only)."""
    num_to_keep: int = 2
    score_metric: str | None = None
    score_mode: str = "min"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose state file is missing, cut short or altered: never loaded."""


def _shard_digest(path: Path) -> str:
    """A shard file's CRC-32 and size: catches a file cut short or altered as the sha256
    of state.pt does, at 3 times sha256's speed (shards are most of a checkpoint's bytes,
    read once more at every save and load)."""
    crc = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return f"crc32:{crc:08x}  {path.stat().st_size}"


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return f"{digest.hexdigest()}  {path.stat().st_size}"


def save_state(state: dict[str, Any], directory: str | Path) -> Path | None:
    """Write `state` to directory/state.pt via a temp file and rename, then its
    sha256 and size (the proof that the file is complete) the same way. A sharded
    state (every rank calls this at once) writes this rank's shards and digests, and
    on rank 0 state.pt with the rest; returns None on the other ranks."""
    if SHARDED in state:
        return _save_sharded(state, Path(directory))
    return _save_full(state, directory)


def _save_full(state: dict[str, Any], directory: str | Path) -> Path:
    path = Path(directory) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    _fsync(tmp)
    os.replace(tmp, path)
    _write_atomically(Path(directory) / DIGEST_FILE, _digest(path))  # (and the folder synced: both renames)
    return path


def _fsync(path: Path) -> None:
    """Its bytes on disk (a power loss after the rename then finds the whole file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    """Write, fsync, rename, and fsync the folder: after a power loss the file is
    either absent or whole, and a digest on disk implies the file it names is too."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def _save_sharded(state: dict[str, Any], directory: Path) -> Path | None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    dcp.save(state[SHARDED], checkpoint_id=str(directory))
    mine = sorted(p for p in directory.iterdir() if p.name.startswith(f"__{rank}_") and p.name.endswith(".distcp"))
    if rank == 0:
        mine.append(directory / DCP_METADATA)
    for shard in mine:
        _fsync(shard)
    listing = "".join(f"{p.name}  {_shard_digest(p)}\n" for p in mine)
    _write_atomically(directory / SHARDS_FILE.format(rank=rank), listing)
    if rank != 0:
        return None
    rest = {k: v for k, v in state.items() if k != SHARDED}
    return _save_full({**rest, SHARDED: {"world_size": world}}, directory)


def _check_sharded(directory: Path, world: int) -> None:
    """Every rank's shard digests present and every file they list there at its size;
    the digests themselves checked by this process for its part: all of them in a
    process without a process group (register, reproduce, one worker), else the saving
    ranks r with r % world_size == this rank, so the ranks of a group share the reading
    (a rank that finds a bad shard fails, and with it the group, before any step)."""
    import torch.distributed as dist

    mine = range(world)
    if dist.is_initialized():
        mine = range(dist.get_rank(), world, dist.get_world_size())
    for rank in range(world):
        listing = directory / SHARDS_FILE.format(rank=rank)
        if not listing.is_file():
            raise CorruptCheckpointError(
                f"checkpoint {directory} is incomplete: no {listing.name} (rank {rank} of {world} did not finish "
                "its save); not loaded")
        for line in listing.read_text().splitlines():
            name, digest = line.split("  ", 1)
            path = directory / name
            if not path.is_file() or path.stat().st_size != int(digest.split()[-1]) or \
                    (rank in mine and _shard_digest(path) != digest):
                raise CorruptCheckpointError(
                    f"checkpoint {directory} is incomplete: shard {name} of rank {rank} is "
                    f"{'missing' if not path.is_file() else 'cut short or altered'}; not loaded")


def is_sharded(directory: str | Path) -> bool:
    """Whether `directory` holds a sharded checkpoint (rank 0's shard digests)."""
    return (Path(directory) / SHARDS_FILE.format(rank=0)).is_file()


def open_state(directory: str | Path) -> dict[str, Any]:
    """A worker's checkpoint: `load_state`'s dict for a full one; for a sharded one its
    state.pt (epoch, cursor, RNG...) with SHARDED set to the checked folder, from which
    `parallel.restore` reads the shards (on any world size)."""
    state = _load_full(directory)
    if SHARDED in state:
        _check_sharded(Path(directory), int(state[SHARDED]["world_size"]))
        state[SHARDED] = str(directory)
    return state


def load_state(directory: str | Path) -> dict[str, Any]:
    """Load directory/state.pt once its sha256 matches (a torn or altered file raises
    CorruptCheckpointError), with `weights_only=True`: a pickled payload is refused.
    A sharded checkpoint is checked and consolidated into one full state dict (model
    and optimizer as saved, keyed by parameter name), as `register` and `reproduce`
    need it."""
    state = open_state(directory)
    if SHARDED not in state:
        return state
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(state[SHARDED], Path(tmp) / "full.pt")
        full = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=True)
    return {**{k: v for k, v in state.items() if k != SHARDED}, **full}


def _load_full(directory: str | Path) -> dict[str, Any]:
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
