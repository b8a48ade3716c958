"""The CNN of `trainers.digits_cnn` on the digits as a uint8 tensor column (a
LightningModule, no Ray imports).

The spec's tabular shorthand with one tensor feature column (`features: [image]`)
gives batches `(x, y)` with x the column as stored: uint8 [batch, 8, 8], values
0..16. It crosses to the device as uint8 (a quarter of float32's bytes) and becomes
float there, in `forward`; training and validation steps are DigitsCNN's.
"""

from __future__ import annotations

import torch

from trainers.digits_cnn import DigitsCNN


class DigitsTensorCNN(DigitsCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(len(x), 64).float() / 16.0)
