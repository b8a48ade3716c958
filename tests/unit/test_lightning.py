"""The Lightning path through an in-process context (no Ray), and its bad input."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from raysweep.cli import main
from raysweep.config.spec import LightningSpec
from raysweep.worker.checkpoint import load_state, save_state
from raysweep.worker.context import TrainContext
from raysweep.worker.lightning import find_module_factory, fit
from trainers import digits_mlp, digits_mlp_lightning

PARAMS = {"batch_size": 64, "hidden": 32, "lr": 0.01, "optimizer": "adam"}
# Both paths run the same float32 ops on the same batches in the same order; they
# differ only in how the epoch mean is accumulated (float64 sums in the plain
# trainer, Lightning's float32 running mean), which moves the 6th-7th digit.
TOLERANCE = 1e-5


def _lightning(digits, num_epochs, checkpoint=None, settings=None):
    ctx, reports = TrainContext.in_process(
        *digits, params=PARAMS, num_epochs=num_epochs, checkpoint=checkpoint
    )
    fit(ctx, find_module_factory(digits_mlp_lightning), settings or LightningSpec())
    return reports


def test_same_losses_as_the_plain_trainer(digits) -> None:
    ctx, plain = TrainContext.in_process(*digits, params=PARAMS, num_epochs=2)
    digits_mlp.train(ctx)
    light = _lightning(digits, 2)
    assert [m["epoch"] for m, _ in light] == [0, 1]
    for (p, _), (q, _) in zip(plain, light, strict=True):
        assert q["train_loss"] == pytest.approx(p["train_loss"], rel=TOLERANCE)
        assert q["val_loss"] == pytest.approx(p["val_loss"], rel=TOLERANCE)
        assert q["val_accuracy"] == pytest.approx(p["val_accuracy"], abs=1e-6)
    assert light[1][0]["val_loss"] < light[0][0]["val_loss"]


def test_resume_continues_from_the_lightning_checkpoint(digits, tmp_path) -> None:
    full = _lightning(digits, 3)
    first = _lightning(digits, 2)
    save_state(first[-1][1], tmp_path)
    resumed = _lightning(digits, 3, checkpoint=load_state(tmp_path))
    assert [m["epoch"] for m, _ in resumed] == [2]
    assert resumed[0][0]["val_loss"] == pytest.approx(full[2][0]["val_loss"], rel=TOLERANCE)


def test_bf16_mixed_and_clipping_run_on_cpu(digits) -> None:
    reports = _lightning(digits, 1, settings=LightningSpec(precision="bf16-mixed", gradient_clip_val=0.5))
    assert np.isfinite(reports[0][0]["val_loss"])


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """write(source) -> name of an importable module holding `source`."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)
        return name

    return write


def test_module_without_lightning_module(capsys, write_spec, user_module) -> None:
    name = user_module("no_module_here", "x = 1\n")
    assert main(["check", str(write_spec(trainer=name))]) == 2
    assert "defines neither train(ctx) nor one LightningModule" in capsys.readouterr().err


def test_training_step_that_returns_nothing(capsys, write_spec, user_module) -> None:
    name = user_module("returns_nothing", """
        import pytorch_lightning as pl, torch
        class M(pl.LightningModule):
            def __init__(self, lr=0.1):
                super().__init__()
                self.layer = torch.nn.Linear(3, 2)
            def training_step(self, batch, batch_idx):
                loss = self.layer(batch[0]).sum()
            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)
    """)
    assert main(["train", str(write_spec(trainer=name))]) == 2
    err = capsys.readouterr().err.strip()
    assert "M.training_step must return the loss" in err and "got NoneType" in err and "\n" not in err


def test_precision_the_machine_cannot_do(capsys, write_spec) -> None:
    spec = write_spec(trainer="trainers.digits_mlp_lightning", lightning={"precision": "16-mixed"})
    assert main(["tune", str(spec)]) == 2
    assert "lightning.precision: '16-mixed' needs a GPU" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("strategy", "fsdp"), ("precision", "bf16-mixed"),
                                           ("accumulate_steps", 2), ("compile", "default")])
def test_scaling_options_of_plain_trainers_are_refused_for_a_lightning_module(capsys, write_spec, option,
                                                                              value) -> None:
    spec = write_spec(trainer="trainers.digits_mlp_lightning", scaling={"num_workers": 2, option: value})
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"scaling.{option}: plain train(ctx) trainers only" in err, err


@pytest.mark.parametrize("on_nan", ["stop", "skip_batch"])
def test_on_nan_other_than_fail_is_refused_for_a_lightning_module(capsys, write_spec, on_nan) -> None:
    spec = write_spec(trainer="trainers.digits_mlp_lightning", failure={"on_nan": on_nan})
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"raysweep: error: {spec}: failure.on_nan: {on_nan} acts in ctx.backward, which plain train(ctx) "
                   "trainers call; 'trainers.digits_mlp_lightning' is a LightningModule (use fail)"), err


def test_a_lightning_module_trains_on_transformed_named_batches(tmp_path) -> None:
    """Named batches (PNG bytes + label) through the trainer's transform reach a
    LightningModule as dicts of tensors, in training and validation."""
    import pytorch_lightning as pl
    import torch

    from raysweep.config.spec import DataSpec
    from raysweep.data.arrays import ArraySet
    from raysweep.data.examples import write_digits_png_parquet
    from raysweep.data.files import resolve_data
    from trainers.digits_png import build_model, transform

    seen: list[tuple[str, str]] = []

    class PngModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = build_model({})

        def training_step(self, batch, batch_idx):
            seen.append(("train", str(batch["image"].dtype)))
            loss = torch.nn.functional.cross_entropy(self.model(batch), batch["label"])
            self.log("train_loss", loss, on_epoch=True, batch_size=len(batch["label"]))
            return loss

        def validation_step(self, batch, batch_idx):
            seen.append(("val", str(batch["image"].dtype)))
            loss = torch.nn.functional.cross_entropy(self.model(batch), batch["label"])
            self.log("val_loss", loss, on_epoch=True, batch_size=len(batch["label"]))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.01)

    write_digits_png_parquet(tmp_path)
    data = resolve_data(DataSpec(train=str(tmp_path / "train"), validation=str(tmp_path / "validation"),
                                 columns=["png", "label"]), "s.yaml")
    train, validation = (ArraySet.from_parquet(files, data.layout)
                         for files in (data.train_files, data.validation_files))
    ctx, reports = TrainContext.in_process(train, validation, params={"batch_size": 128}, num_epochs=2,
                                           transform=transform)
    fit(ctx, lambda params: PngModule(), LightningSpec())
    assert [m["epoch"] for m, _ in reports] == [0, 1]
    assert reports[1][0]["val_loss"] < reports[0][0]["val_loss"]
    assert {kind for kind, _ in seen} == {"train", "val"} and {d for _, d in seen} == {"torch.uint8"}
