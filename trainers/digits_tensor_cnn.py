"""A small CNN on the digits as a uint8 tensor column (a LightningModule, no Ray imports).

The spec's tabular shorthand with one tensor feature column (`features: [image]`)
gives batches `(x, y)` with x the column as stored: uint8 [batch, 8, 8], values
0..16. It crosses to the device as uint8 (a quarter of float32's bytes) and becomes
float there, in `forward`.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn


class DigitsTensorCNN(pl.LightningModule):
    def __init__(self, channels: int = 16, hidden: int = 64, lr: float = 1e-2) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * channels * 4, hidden), nn.ReLU(),
            nn.Linear(hidden, 10),
        )
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1).float() / 16.0)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", self.loss_fn(logits, y), on_epoch=True, batch_size=len(y))
        self.log("val_accuracy", (logits.argmax(1) == y).float().mean(), on_epoch=True, batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)
