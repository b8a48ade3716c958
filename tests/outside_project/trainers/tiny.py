"""A logistic-regression trainer of this project's own (not raysweep's examples)."""

from __future__ import annotations

import torch
from torch import nn

from raysweep import TrainContext

NUM_FEATURES = 8


def build_model(params: dict) -> nn.Module:
    return nn.Linear(NUM_FEATURES, 2)


def train(ctx: TrainContext) -> None:
    torch.manual_seed(ctx.seed)
    model = build_model(ctx.params)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(ctx.params["lr"]))
    if ctx.checkpoint is not None:
        model.load_state_dict(ctx.checkpoint["model"])
    ddp_model = ctx.prepare_model(model)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for epoch in range(ctx.start_epoch, ctx.num_epochs):
        for x, y in ctx.train_batches(epoch, 32):
            optimizer.zero_grad()
            (loss_fn(ddp_model(x), y) / len(y)).backward()
            optimizer.step()
        with torch.no_grad():
            sums = [(float(loss_fn(model(x), y)), float(len(y))) for x, y in ctx.validation_batches(256)]
        loss, count = ctx.all_reduce_sum([sum(s[0] for s in sums), sum(s[1] for s in sums)])
        ctx.report({"epoch": epoch, "val_loss": loss / count}, checkpoint={"model": model.state_dict(), "epoch": epoch})
