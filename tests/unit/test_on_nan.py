"""failure.on_nan: what a non-finite training loss does (fail | stop | skip_batch), in
one process through the trainer's context; the multi-rank agreement and the sweep's
early stop are in tests/integration/test_on_nan_on_ray.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from raysweep.report import EPOCHS_COMPLETED, Report
from raysweep.testing.ranks import digits_splits
from raysweep.worker.context import LossDiverged, NonFiniteMetricError, TrainContext
from raysweep.worker.parallel import ParallelSettings


def _context(on_nan: str, accumulate: int = 1) -> tuple[TrainContext, list, nn.Module, torch.optim.Optimizer]:
    train, validation = digits_splits()
    reports: list = []
    ctx = TrainContext(params={}, num_epochs=2, seed=0, train=train, validation=validation,
                       report_fn=lambda m, c: reports.append(m), on_nan=on_nan,
                       parallel=ParallelSettings(accumulate_steps=accumulate))
    torch.manual_seed(0)
    model = nn.Linear(64, 10)
    ctx.prepare_model(model)
    return ctx, reports, model, torch.optim.SGD(model.parameters(), lr=0.1)


def _epoch(ctx: TrainContext, model: nn.Module, optimizer, nan_at: set[int], epoch: int = 0) -> list[bool]:
    """One epoch; returns, per batch, whether the weights changed at it."""
    changed = []
    for step, (x, y) in enumerate(ctx.train_batches(epoch, 64)):
        before = model.weight.detach().clone()
        loss = nn.functional.cross_entropy(model(x), y) * (math.nan if step in nan_at else 1.0)
        ctx.backward(loss, optimizer)
        changed.append(not torch.equal(before, model.weight))
    return changed


def test_skip_batch_drops_only_the_diverged_batch_and_counts_it() -> None:
    ctx, reports, model, optimizer = _context("skip_batch")
    changed = _epoch(ctx, model, optimizer, nan_at={3})
    assert len(changed) > 5 and changed[3] is False and all(changed[:3]) and all(changed[4:])
    assert torch.isfinite(model.weight).all()
    ctx.report({"epoch": 0, "val_loss": 1.0})
    assert reports[-1]["skipped_batches"] == 1
    _epoch(ctx, model, optimizer, nan_at=set(), epoch=1)
    ctx.report({"epoch": 1, "val_loss": 1.0})
    assert reports[-1]["skipped_batches"] == 0  # (counted per epoch)


def test_skip_batch_with_accumulation_drops_the_whole_group() -> None:
    """accumulate_steps 2: a NaN in a group's first micro-batch drops that group's update
    (its other micro-batch's gradients too: ranks must agree on every step)."""
    ctx, _, model, optimizer = _context("skip_batch", accumulate=2)
    changed = _epoch(ctx, model, optimizer, nan_at={2})
    assert changed[:6] == [False, True, False, False, False, True]
    assert optimizer.param_groups[0]["params"][0].grad is None  # (zeroed after the dropped group)


def test_skip_batch_fails_an_epoch_whose_every_batch_diverged() -> None:
    ctx, _, model, optimizer = _context("skip_batch")
    _epoch(ctx, model, optimizer, nan_at=set(range(1000)))
    with pytest.raises(NonFiniteMetricError, match=r"^non-finite loss in every batch of epoch 0 \(\d+ dropped; "
                                                   r"failure.on_nan: skip_batch\)$"):
        ctx.report({"epoch": 0, "val_loss": 1.0})


def test_stop_raises_at_the_diverged_step_naming_it() -> None:
    ctx, _, model, optimizer = _context("stop")
    with pytest.raises(LossDiverged, match=r"^non-finite loss at epoch 0, batch 4 \(rank 0; failure.on_nan: stop\)$") \
            as stop:
        _epoch(ctx, model, optimizer, nan_at={4})
    assert (stop.value.epoch, stop.value.step) == (0, 4)
    assert torch.isfinite(model.weight).all()


def test_a_stop_report_crosses_to_the_driver_as_an_early_stop() -> None:
    """What the entry point reports for a LossDiverged: no metrics to log, the epochs done
    as the schedulers' and the searcher's clock, and the reason."""
    sent = Report.stopped(1, 7, "non-finite loss at epoch 1, batch 7 (rank 0; failure.on_nan: stop)").to_ray()
    assert sent[EPOCHS_COMPLETED] == 1
    back = Report.from_ray({**sent, "training_iteration": 3})
    assert back.mid_epoch and back.metrics == {} and back.step == 7 and back.stop_reason.startswith("non-finite")
    assert Report.from_ray(Report.checkpoint(1, 7).to_ray()).stop_reason is None


@pytest.mark.parametrize("on_nan", ["stop", "skip_batch"])
def test_a_trainer_that_never_calls_ctx_backward_is_told(on_nan: str) -> None:
    ctx, _, model, optimizer = _context(on_nan)
    for x, y in ctx.train_batches(0, 64):
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    with pytest.raises(NonFiniteMetricError, match=rf"^failure.on_nan: {on_nan} needs the trainer to call "
                                                   r"ctx.backward\(loss, optimizer\); it did not in epoch 0$"):
        ctx.report({"epoch": 0, "val_loss": 1.0})


def test_fail_is_unchanged_and_adds_no_metric() -> None:
    ctx, reports, model, optimizer = _context("fail")
    _epoch(ctx, model, optimizer, nan_at=set())
    ctx.report({"epoch": 0, "val_loss": 1.0})
    assert "skipped_batches" not in reports[-1]
    with pytest.raises(NonFiniteMetricError, match="non-finite loss at epoch 1"):
        _epoch(ctx, model, optimizer, nan_at={0}, epoch=1)
