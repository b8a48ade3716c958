"""The digits trainer through an in-process TrainContext (no Ray)."""

from __future__ import annotations

import copy
import os
import pickle

import numpy as np
import pytest
import torch

from raysweep.data.arrays import ArraySet
from raysweep.worker.checkpoint import DIGEST_FILE, CorruptCheckpointError, _digest, load_state, save_state
from raysweep.worker.context import NonFiniteMetricError, TrainContext
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
    poisoned = ArraySet.from_matrix(np.where(np.arange(64) == 3, np.inf, validation.features).astype(np.float32),
                        validation.labels)
    ctx, reports = TrainContext.in_process(train, poisoned, params=PARAMS, num_epochs=3)
    with pytest.raises(NonFiniteMetricError, match="non-finite metric.*val_loss"):
        digits_mlp.train(ctx)
    assert reports == []


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_a_pickle_payload_is_refused(tmp_path, fault_figures) -> None:
    """Case 9: a checkpoint carrying a pickle payload (with a matching sha256, as a
    forger would write it) is refused on load, and the payload never runs."""
    marker = tmp_path / "payload-ran"
    torch.save({"model": {}, "epoch": 0, "evil": _Payload(str(marker))}, tmp_path / "state.pt")
    (tmp_path / DIGEST_FILE).write_text(_digest(tmp_path / "state.pt"))
    try:
        load_state(tmp_path)
        refused = False
    except pickle.UnpicklingError:
        refused = True
    fault_figures(faults_injected=1, unsafe_payloads_run=int(marker.exists()), checkpoints_refused=int(refused))
    assert refused, "the forged checkpoint was loaded"
    assert not marker.exists(), "the payload ran"
    fault_figures(faults_survived=1)


def test_torn_or_unproven_checkpoint_is_refused(tmp_path) -> None:
    save_state({"w": torch.ones(1000), "epoch": 3}, tmp_path)
    assert load_state(tmp_path)["epoch"] == 3
    state = tmp_path / "state.pt"
    state.write_bytes(state.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpointError, match="incomplete.*does not match"):
        load_state(tmp_path)
    (tmp_path / DIGEST_FILE).unlink()
    with pytest.raises(CorruptCheckpointError, match="incomplete: no state.sha256"):
        load_state(tmp_path)


def test_drain_notice_saves_one_checkpoint_at_the_next_batch_and_resumes_exactly(digits, monkeypatch) -> None:
    """A drain notice seen mid-epoch: the context saves a mid-epoch checkpoint (flagged
    preempted, with the node's deadline) right after the batch it was seen at, once,
    and waits for the node to go; resumed from it, the run ends as an uninterrupted one."""
    from raysweep.worker import context as context_module
    from raysweep.worker import preemption

    monkeypatch.setattr(preemption, "PREEMPTION_WAIT_MARGIN_S", 0.0)  # (a past deadline: no wait)
    full_ctx, full = TrainContext.in_process(*digits, params=PARAMS, num_epochs=3)
    digits_mlp.train(full_ctx)

    ctx, reports = TrainContext.in_process(*digits, params=PARAMS, num_epochs=3)
    steps = {"n": 0}
    deadline = 1000.0  # (Unix time long past)

    def notice() -> float | None:
        steps["n"] += 1
        # From epoch 1's 4th step (the check runs after 21 of an epoch's 22 steps).
        return deadline if steps["n"] > 21 + 3 else None

    ctx.preemption = notice
    ctx.report_fn = lambda m, c: reports.append((m, copy.deepcopy(c)))  # (as saved on Ray, not live tensors)
    assert ctx.num_train_batches(PARAMS["batch_size"]) == 22
    digits_mlp.train(ctx)
    jit = [(m, c) for m, c in reports if m.get("preempted")]
    assert len(jit) == 1, "one just-in-time checkpoint per notice"
    metrics, state = jit[0]
    assert (metrics["epoch"], metrics["step"], metrics["drain_deadline_unix"]) == (1, 4, deadline)
    assert state is not None and state["cursor"] == {"epoch": 1, "step": 4, "world_size": 1, "batch_size": 64,
                                                     "done": []}
    assert ctx.preempted_at == (1, 4)

    assert state[context_module.PREEMPTIONS] == 1  # (counted in the checkpoint: failure.max_preemptions)

    resumed_ctx, resumed = TrainContext.in_process(*digits, params=PARAMS, num_epochs=3, checkpoint=state)
    assert (resumed_ctx.start_epoch, resumed_ctx.start_step) == (1, 4)
    assert resumed_ctx.preemptions == 1
    resumed_ctx.check_preemptions(1)
    with pytest.raises(context_module.PreemptedTooOften, match=r"^preempted 1 times, more than "
                                                               r"failure.max_preemptions \(0\); its latest"):
        resumed_ctx.check_preemptions(0)
    digits_mlp.train(resumed_ctx)
    epochs = [m for m, _ in resumed if not m.get("mid_epoch")]
    assert [m["epoch"] for m in epochs] == [1, 2]
    assert epochs[-1]["val_loss"] == pytest.approx(full[2][0]["val_loss"], rel=1e-6)
    # The count travels on in every later checkpoint, and the trainer never sees it.
    assert [c[context_module.PREEMPTIONS] for _, c in resumed if c is not None] == [1, 1]
    again, _ = TrainContext.in_process(*digits, params=PARAMS, num_epochs=3, checkpoint=state)
    model = digits_mlp.build_model(PARAMS)
    again.prepare_model(model)
    assert context_module.PREEMPTIONS not in again.restore(model, digits_mlp.build_optimizer(model, PARAMS))
    assert all(context_module.PREEMPTIONS not in c for _, c in full if c is not None)
