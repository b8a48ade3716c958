"""An MLP on scikit-learn's 8x8 digits, trained data-parallel through a TrainContext.

Params: hidden (units), num_layers, hidden_0, hidden_1, ... (one layer's units, else
hidden), momentum (sgd; 0.9), lr, optimizer ('adam' | 'sgd'), batch_size,
weight_decay, dropout, precision ('32' | 'bf16-mixed': bf16 autocast, as
scaling.precision bf16-mixed does). Reports per epoch: train_loss, val_loss,
val_accuracy, epoch, samples_per_s, params_count (the model's size, an objective of
search_spaces/digits_mlp_pareto.yaml); checkpoints model, optimizer, epoch and RNG
state. Written for every scaling.strategy (ddp, fsdp), accumulate_steps and compile:
the optimizer is built after ctx.prepare_model, state goes through ctx.state and
ctx.restore, and steps through ctx.backward.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from raysweep import TrainContext

NUM_FEATURES = 64
NUM_CLASSES = 10


def build_model(params: dict[str, Any]) -> nn.Module:
    hidden = int(params.get("hidden", 64))
    layers: list[nn.Module] = []
    width = NUM_FEATURES
    for i in range(int(params.get("num_layers", 1))):
        units = int(params.get(f"hidden_{i}", hidden))
        layers += [nn.Linear(width, units), nn.ReLU(), nn.Dropout(float(params.get("dropout", 0.0)))]
        width = units
    layers.append(nn.Linear(width, NUM_CLASSES))
    return nn.Sequential(*layers)


def build_optimizer(model: nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
    lr = float(params.get("lr", 1e-2))
    decay = float(params.get("weight_decay", 0.0))
    if params.get("optimizer", "adam") == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(params.get("momentum", 0.9)),
                               weight_decay=decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay)


def layer_widths(trial: Any) -> None:
    """A define-by-run space (`space_function: trainers.digits_mlp:layer_widths`): one
    width per layer of the depth the trial drew (`num_layers` of the YAML space)."""
    for i in range(int(trial.params.get("num_layers", 1))):
        trial.suggest_int(f"hidden_{i}", 16, 256, log=True)


def evaluate(model: nn.Module, ctx: TrainContext, batch_size: int) -> dict[str, float]:
    """Exact validation: every row once across ranks, sums all-reduced."""
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    with torch.no_grad():
        for x, y in ctx.validation_batches(batch_size):
            logits = model(x)
            loss_sum += float(loss_fn(logits, y))
            correct += float((logits.argmax(dim=1) == y).sum())
            count += len(y)
    loss_sum, correct, count = ctx.all_reduce_sum([loss_sum, correct, count])
    return {"val_loss": loss_sum / count, "val_accuracy": correct / count}


def snapshot(ctx: TrainContext, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What a checkpoint holds (the context adds the epoch or the mid-epoch cursor)."""
    return ctx.state(model, optimizer, rng=torch.get_rng_state())


def train(ctx: TrainContext) -> None:
    torch.manual_seed(ctx.seed)
    model = build_model(ctx.params)
    ddp_model = ctx.prepare_model(model)
    optimizer = build_optimizer(model, ctx.params)
    resumed = ctx.restore(model, optimizer)
    if "rng" in resumed:
        torch.set_rng_state(resumed["rng"])
    batch_size = int(ctx.params.get("batch_size", 64))
    loss_fn = nn.CrossEntropyLoss()
    bf16 = ctx.params.get("precision", "32") == "bf16-mixed"

    for epoch in range(ctx.start_epoch, ctx.num_epochs):
        ddp_model.train()
        started, seen = time.perf_counter(), 0
        # Summed on the device: one host sync per epoch, not one per step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for x, y in ctx.train_batches(epoch, batch_size, state=lambda: snapshot(ctx, model, optimizer)):
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16) if bf16 else ctx.autocast():
                loss = loss_fn(ddp_model(x), y)
            ctx.backward(loss, optimizer)
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
            "params_count": float(sum(p.numel() for p in model.parameters())),
        }
        ctx.report(metrics, checkpoint={**snapshot(ctx, model, optimizer), "epoch": epoch})
