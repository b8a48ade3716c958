"""The digits MLP of `trainers.digits_mlp` as a LightningModule.

Same model, optimizer, seed and data order as the plain trainer, so the two paths
give the same per-epoch losses (tests/integration/test_lightning_on_ray.py checks it).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from trainers.digits_mlp import build_model, build_optimizer


class DigitsMLP(pl.LightningModule):
    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = params
        self.model = build_model(params)
        self.loss_fn = nn.CrossEntropyLoss()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self.model(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.log("val_loss", self.loss_fn(logits, y), on_epoch=True, batch_size=len(y))
        self.log("val_accuracy", (logits.argmax(1) == y).float().mean(), on_epoch=True, batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.model, self.params)
