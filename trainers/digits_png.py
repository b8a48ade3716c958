"""The digits as PNG bytes: `transform` decodes them with Pillow (and augments training
batches), `train(ctx)` trains a small CNN on the decoded images.

The spec names the columns (`data.columns: [png, label]`), so batches are dicts. The
transform runs in the loader's background threads, before the batch reaches the
device: it gets {"png": list[bytes], "label": tensor} and returns
{"image": uint8 tensor [batch, 8, 8], "label": tensor}. A training batch's `rng` is
seeded from (seed, epoch, step, rank), so the random shifts are the same on every
run with the same seed; validation batches get rng=None (decoded, not shifted).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from raysweep import TrainContext


def transform(batch: dict[str, Any], rng: np.random.Generator | None) -> dict[str, Any]:
    images = np.stack([np.asarray(Image.open(io.BytesIO(data))) for data in batch["png"]])
    if rng is not None:  # augment: shift each image by up to one pixel
        shifts = rng.integers(-1, 2, size=(len(images), 2))
        images = np.stack([np.roll(image, tuple(shift), axis=(0, 1))
                           for image, shift in zip(images, shifts, strict=True)])
    return {"image": torch.from_numpy(images), "label": batch["label"]}


class PngDigitsNet(nn.Module):
    """Takes the transformed batch (a dict) and returns logits."""

    def __init__(self, channels: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(channels * 16, hidden), nn.ReLU(), nn.Linear(hidden, 10),
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["image"].unsqueeze(1).float() / 255.0)


def build_model(params: dict[str, Any]) -> nn.Module:
    return PngDigitsNet(int(params.get("channels", 16)), int(params.get("hidden", 64)))


def train(ctx: TrainContext) -> None:
    torch.manual_seed(ctx.seed)
    model = build_model(ctx.params)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(ctx.params.get("lr", 1e-2)))
    if ctx.checkpoint is not None:
        model.load_state_dict(ctx.checkpoint["model"])
        optimizer.load_state_dict(ctx.checkpoint["optimizer"])
    ddp_model = ctx.prepare_model(model)
    batch_size = int(ctx.params.get("batch_size", 64))
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for epoch in range(ctx.start_epoch, ctx.num_epochs):
        ddp_model.train()
        train_loss, seen = 0.0, 0
        for batch in ctx.train_batches(epoch, batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(ddp_model(batch), batch["label"])
            (loss / len(batch["label"])).backward()
            optimizer.step()
            train_loss, seen = train_loss + float(loss), seen + len(batch["label"])
        model.eval()
        val_loss, correct, count = 0.0, 0.0, 0.0
        with torch.no_grad():
            for batch in ctx.validation_batches(512):
                logits = model(batch)
                val_loss += float(loss_fn(logits, batch["label"]))
                correct += float((logits.argmax(1) == batch["label"]).sum())
                count += len(batch["label"])
        train_loss, seen, val_loss, correct, count = ctx.all_reduce_sum([train_loss, seen, val_loss, correct, count])
        ctx.report({"epoch": epoch, "train_loss": train_loss / seen, "val_loss": val_loss / count,
                    "val_accuracy": correct / count},
                   checkpoint={"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch})
