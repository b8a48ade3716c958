"""An MLP regressor on scikit-learn's diabetes data (raysweep.data.examples.write_diabetes_parquet:
10 standardized features, a standardized target), trained data-parallel through a TrainContext.

Params: hidden (units), num_layers, lr, optimizer ('adam' | 'sgd'), momentum (sgd; 0.9),
batch_size, weight_decay, dropout. Reports per epoch: epoch, train_loss, val_loss (both
MSE on the standardized target: 1.0 is about what predicting the mean scores),
samples_per_s; checkpoints model, optimizer, epoch and RNG state.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from raysweep import TrainContext

NUM_FEATURES = 10


def build_model(params: dict[str, Any]) -> nn.Module:
    hidden = int(params.get("hidden", 64))
    layers: list[nn.Module] = []
    width = NUM_FEATURES
    for _ in range(int(params.get("num_layers", 1))):
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(float(params.get("dropout", 0.0)))]
        width = hidden
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def build_optimizer(model: nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
    lr = float(params.get("lr", 1e-2))
    decay = float(params.get("weight_decay", 0.0))
    if params.get("optimizer", "adam") == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(params.get("momentum", 0.9)),
                               weight_decay=decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay)


def evaluate(model: nn.Module, ctx: TrainContext, batch_size: int) -> dict[str, float]:
    """Exact validation MSE: every row once across ranks, sums all-reduced."""
    model.eval()
    loss_sum, count = 0.0, 0.0
    with torch.no_grad():
        for x, y in ctx.validation_batches(batch_size):
            loss_sum += float(nn.functional.mse_loss(model(x).squeeze(1), y.float(), reduction="sum"))
            count += len(y)
    loss_sum, count = ctx.all_reduce_sum([loss_sum, count])
    return {"val_loss": loss_sum / count}


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What a checkpoint holds (the context adds the epoch or the mid-epoch cursor)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}


def train(ctx: TrainContext) -> None:
    torch.manual_seed(ctx.seed)
    model = build_model(ctx.params)
    optimizer = build_optimizer(model, ctx.params)
    if ctx.checkpoint is not None:
        model.load_state_dict(ctx.checkpoint["model"])
        optimizer.load_state_dict(ctx.checkpoint["optimizer"])
        torch.set_rng_state(ctx.checkpoint["rng"])
    ddp_model = ctx.prepare_model(model)
    batch_size = int(ctx.params.get("batch_size", 32))

    for epoch in range(ctx.start_epoch, ctx.num_epochs):
        ddp_model.train()
        started, seen = time.perf_counter(), 0
        # Summed on the device: one host sync per epoch, not one per step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for x, y in ctx.train_batches(epoch, batch_size, state=lambda: snapshot(model, optimizer)):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(ddp_model(x).squeeze(1), y.float())
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            seen += len(y)
        train_loss_sum = float(loss_sum)
        elapsed = time.perf_counter() - started
        loss_sum, seen_all = ctx.all_reduce_sum([train_loss_sum, float(seen)])
        metrics = {
            "epoch": epoch,
            "train_loss": loss_sum / seen_all,
            **evaluate(model, ctx, batch_size=512),
            "samples_per_s": seen_all / max(elapsed, 1e-9),
        }
        ctx.report(metrics, checkpoint={**snapshot(model, optimizer), "epoch": epoch})
