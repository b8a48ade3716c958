"""The digits trainer through an in-process TrainContext (no Ray)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from raysweep.checkpoint import load_state, save_state
from raysweep.context import ArraySet, NonFiniteMetricError, TrainContext
from trainers import digits_mlp

PARAMS = {"batch_size": 64, "hidden": 32, "lr": 0.01, "optimizer": "adam"}


def test_loss_falls_and_every_epoch_reports(digits) -> None:
    ctx, reports = TrainContext.in_process(*digits, params=PARAMS, num_epochs=3)
    digits_mlp.train(ctx)
    metrics = [m for m, _ in reports]
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert metrics[-1]["val_loss"] < metrics[0]["val_loss"] < 2.3
    assert metrics[-1]["val_accuracy"] > 0.8
    assert {"train_loss", "val_loss", "val_accuracy", "samples_per_s", "epochs_completed"} <= set(metrics[0])
    state = reports[-1][1]
    assert state is not None and state["epoch"] == 2 and "optimizer" in state and "rng" in state


def test_resume_from_checkpoint_matches_an_uninterrupted_run(digits, tmp_path) -> None:
    full_ctx, full = TrainContext.in_process(*digits, params=PARAMS, num_epochs=3)
    digits_mlp.train(full_ctx)

    first_ctx, first = TrainContext.in_process(*digits, params=PARAMS, num_epochs=2)
    digits_mlp.train(first_ctx)
    save_state(first[-1][1], tmp_path)
    resumed_ctx, resumed = TrainContext.in_process(
        *digits, params=PARAMS, num_epochs=3, checkpoint=load_state(tmp_path)
    )
    assert resumed_ctx.start_epoch == 2
    digits_mlp.train(resumed_ctx)
    assert [m["epoch"] for m, _ in resumed] == [2]
    assert resumed[0][0]["val_loss"] == pytest.approx(full[2][0]["val_loss"], rel=1e-6)


def test_non_finite_metric_stops_the_run(digits) -> None:
    train, validation = digits
    poisoned = ArraySet(np.where(np.arange(64) == 3, np.inf, validation.features).astype(np.float32),
                        validation.labels)
    ctx, reports = TrainContext.in_process(train, poisoned, params=PARAMS, num_epochs=3)
    with pytest.raises(NonFiniteMetricError, match="non-finite metric.*val_loss"):
        digits_mlp.train(ctx)
    assert reports == []


class _Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


def test_checkpoint_with_a_pickle_payload_is_refused(tmp_path) -> None:
    torch.save({"model": {}, "epoch": 0, "evil": _Payload()}, tmp_path / "state.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_state(tmp_path)
