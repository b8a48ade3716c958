"""Sharded checkpoints (scaling.strategy: fsdp): a torn save is never loaded, and
`load_state` (what register and reproduce read) consolidates one into a full state
dict. Written here by one process without a process group, as
torch.distributed.checkpoint allows; the multi-rank saves are in
tests/integration/test_strategies.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from raysweep.testing.ranks import digits_splits
from raysweep.worker.checkpoint import (
    SHARDED,
    CorruptCheckpointError,
    _save_full,
    is_sharded,
    load_state,
    open_state,
    save_state,
)
from raysweep.worker.context import TrainContext
from raysweep.worker.parallel import ParallelSettings, shard_units


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.fixture
def sharded(tmp_path: Path) -> tuple[Path, nn.Module]:
    model = _model()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    save_state({SHARDED: {"model": model_state, "optimizer": optim_state}, "epoch": 3}, tmp_path)
    return tmp_path, model


def test_a_sharded_checkpoint_opens_and_consolidates(sharded) -> None:
    folder, model = sharded
    assert is_sharded(folder) and (folder / ".metadata").is_file()
    opened = open_state(folder)
    assert opened["epoch"] == 3 and opened[SHARDED] == str(folder)
    full = load_state(folder)
    assert full["epoch"] == 3 and SHARDED not in full
    assert set(full["model"]) == set(model.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(full["model"][name], value), name
    assert set(full["optimizer"]["state"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}


@pytest.mark.parametrize("fault", ["cut_shard", "alter_metadata", "no_shard_digests", "no_state"])
def test_a_torn_sharded_checkpoint_is_never_loaded(sharded, fault) -> None:
    folder, _ = sharded
    shard = folder / "__0_0.distcp"
    if fault == "cut_shard":
        shard.write_bytes(shard.read_bytes()[:-7])
    elif fault == "alter_metadata":
        metadata = folder / ".metadata"
        data = bytearray(metadata.read_bytes())
        data[len(data) // 2] ^= 0xFF
        metadata.write_bytes(bytes(data))
    elif fault == "no_shard_digests":
        (folder / "shards-0.sha256").unlink()
    else:
        (folder / "state.sha256").unlink()
    for read in (open_state, load_state):
        with pytest.raises(CorruptCheckpointError, match="incomplete") as refused:
            read(folder)
        assert "\n" not in str(refused.value) and "not loaded" in str(refused.value)


def test_a_missing_rank_is_named(sharded) -> None:
    folder, _ = sharded
    state = torch.load(folder / "state.pt", weights_only=True)
    state[SHARDED]["world_size"] = 2  # (as if a second rank saved, but its files never arrived)
    _save_full(state, folder)
    with pytest.raises(CorruptCheckpointError, match=r"no shards-1.sha256 \(rank 1 of 2"):
        open_state(folder)


def test_shard_units_follow_the_rule() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

    class Blocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(4, 2)
            self.blocks = nn.ModuleList([Block(), Block()])
            self.head = nn.Linear(2, 4)

    blocks = Blocks()
    assert shard_units(blocks) == list(blocks.blocks)
    assert shard_units(blocks, ("Linear",)) == [blocks.blocks[0].fc, blocks.blocks[1].fc, blocks.head]
    plain = _model()
    assert shard_units(plain) == [plain[0], plain[2]]
    blocks.shard_units = lambda: [blocks.head]  # type: ignore[method-assign]
    assert shard_units(blocks) == [blocks.head]


def test_accumulation_steps_once_per_group_and_at_the_epoch_end() -> None:
    """ctx.backward: 2 micro-batches per step; an epoch of 5 batches steps 3 times, the
    last group of one batch unscaled (its loss is that group's mean)."""
    train, validation = digits_splits()
    ctx = TrainContext(params={}, num_epochs=1, seed=0, train=train, validation=validation,
                       report_fn=lambda m, c: None, parallel=ParallelSettings(accumulate_steps=2))
    model = _model()
    ctx.prepare_model(model)
    steps: list[bool] = []

    class Counting(torch.optim.SGD):
        def step(self, closure=None):  # type: ignore[no-untyped-def]
            steps.append(True)
            return super().step(closure)

    optimizer = Counting(model.parameters(), lr=0.0)
    total = ctx.num_train_batches(256)
    assert total == 5
    stepped = []
    for batch_index, _batch in enumerate(ctx.train_batches(0, 256)):
        weight = torch.ones((), requires_grad=True)
        loss = weight * 1.0 + 0 * sum(p.sum() for p in model.parameters())
        stepped.append(ctx.backward(loss, optimizer))
        if batch_index % 2 == 0 and batch_index < 4:
            assert weight.grad is not None and float(weight.grad) == 0.5  # (divided by the group of 2)
        if batch_index == 4:
            assert float(weight.grad) == 1.0  # (the last group holds one batch)
    assert stepped == [False, True, False, True, True] and len(steps) == 3


def test_a_non_finite_loss_fails_the_run_within_the_check_interval() -> None:
    """ctx.backward looks at the losses every LOSS_CHECK_STEPS steps: a NaN at batch 20
    fails the run by batch 31, naming the epoch and the batches, not at the epoch's end."""
    from raysweep.worker.context import LOSS_CHECK_STEPS, NonFiniteMetricError

    train, validation = digits_splits()
    ctx, _ = TrainContext.in_process(train, validation, {}, num_epochs=1)
    model = _model()
    ctx.prepare_model(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    seen = []
    with pytest.raises(NonFiniteMetricError, match=r"^non-finite loss at epoch 0, batches 16-31 \(rank 0\)$"):
        for i, _batch in enumerate(ctx.train_batches(0, 16)):
            seen.append(i)
            loss = model(torch.ones(2, 4)).sum() * (math.nan if i == 20 else 1.0)
            ctx.backward(loss, optimizer)
    assert seen[-1] == 2 * LOSS_CHECK_STEPS - 1 and ctx.num_train_batches(16) > 32


@pytest.mark.parametrize("kind", ["full", "sharded"])
def test_every_checkpoint_file_is_synced_before_it_is_named_complete(tmp_path: Path, monkeypatch, kind) -> None:
    """Power loss after a save: each file reaches the disk (fsync) before the rename or
    digest listing that names it complete, and the folder after the renames; the order of
    events on the file system is recorded and checked."""
    import os

    from raysweep.worker import checkpoint as module

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("sync " + Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(f"rename {Path(src).name} -> {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(module.os, "fsync", fsync)
    monkeypatch.setattr(module.os, "replace", replace)
    model = _model()
    if kind == "full":
        save_state({"model": model.state_dict(), "epoch": 1}, tmp_path)
        assert events == ["sync state.tmp", "rename state.tmp -> state.pt", "sync state.tmp",
                          "rename state.tmp -> state.sha256", f"sync {tmp_path.name}"]
    else:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, _ = get_state_dict(model, [])
        save_state({SHARDED: {"model": model_state}, "epoch": 1}, tmp_path)
        shards = sorted(p.name for p in tmp_path.glob("__0_*.distcp")) + [".metadata"]
        listing = events.index("rename shards-0.tmp -> shards-0.sha256")
        # (torch.distributed.checkpoint's own syncs and renames are among the events too)
        assert all(f"sync {name}" in events[:listing] for name in shards), events
        assert events[listing - 1:listing + 2] == ["sync shards-0.tmp", "rename shards-0.tmp -> shards-0.sha256",
                                                   f"sync {tmp_path.name}"]
        assert events[-2:] == ["rename state.tmp -> state.sha256", f"sync {tmp_path.name}"]
    assert load_state(tmp_path)["epoch"] == 1
