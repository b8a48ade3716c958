"""A small decoder-only transformer (GPT) over the byte-level token column of the text
example (search_spaces/char_gpt.yaml): next-token loss, written for
`scaling.strategy: fsdp` (each block is a shard unit), `accumulate_steps`,
`precision` and `compile`.

Params: d_model, n_layer, n_head, dropout, lr (peak), warmup_steps (linear warm-up,
then cosine decay to lr/10 over the run's optimizer steps), weight_decay (AdamW, on
matrices only), batch_size (per micro-step and rank), peak_tflops (the device's peak
for MFU; default: looked up for known GPUs, none on CPU).

Reports per epoch: train_loss, val_loss, tokens_per_s (real, unpadded tokens of the
training steps, all ranks; the first step's wait for the compiler left out), model_tflops
(achieved, from the FLOP count below) and mfu (model FLOPs utilisation, where the
device's peak is known), lr, params_count.

FLOPs per trained token: 6 * N (N: parameters outside the embeddings, forward and
backward of every matrix) + 12 * n_layer * d_model * T (attention scores and values
over T positions), as in the PaLM paper's appendix B.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from raysweep import TrainContext
from trainers.char_lm import VOCAB_SIZE, token_loss

MAX_LENGTH = 96  # the spec's tokens.max_length
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10G": 70.0}
"""Dense bf16 peak (TFLOP/s) by GPU name: what MFU divides by."""


class Block(nn.Module):
    """Pre-norm causal self-attention and MLP."""

    def __init__(self, d_model: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                  dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln2(x))


class CharGPT(nn.Module):
    def __init__(self, d_model: int = 64, n_layer: int = 2, n_head: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, d_model, padding_idx=0)
        self.position = nn.Embedding(MAX_LENGTH, d_model)
        self.blocks = nn.ModuleList([Block(d_model, n_head, dropout) for _ in range(n_layer)])
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB_SIZE, bias=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = batch["tokens"].long()
        x = self.embed(tokens) + self.position(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def build_model(params: dict[str, Any]) -> nn.Module:
    return CharGPT(int(params.get("d_model", 64)), int(params.get("n_layer", 2)), int(params.get("n_head", 4)),
                   float(params.get("dropout", 0.0)))


def flops_per_token(model: nn.Module, params: dict[str, Any], length: int) -> float:
    """6 N + 12 L d T (see the module docstring), N without the embedding tables."""
    embedded = sum(p.numel() for name, p in model.named_parameters() if name.startswith(("embed.", "position.")))
    n = sum(p.numel() for p in model.parameters()) - embedded
    return 6.0 * n + 12.0 * int(params.get("n_layer", 2)) * int(params.get("d_model", 64)) * length


def peak_flops(device: torch.device, params: dict[str, Any]) -> float | None:
    if "peak_tflops" in params:
        return float(params["peak_tflops"]) * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_TFLOPS.items() if key in name), None)


def build_optimizer(model: nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on biases, norms or embeddings)."""
    def decayed(name: str, p: torch.Tensor) -> bool:
        return p.dim() >= 2 and not name.startswith(("embed", "position"))

    decay = [p for name, p in model.named_parameters() if decayed(name, p)]
    others = [p for name, p in model.named_parameters() if not decayed(name, p)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": float(params.get("weight_decay", 0.1))},
                              {"params": others, "weight_decay": 0.0}],
                             lr=float(params.get("lr", 3e-3)), betas=(0.9, 0.95))


def learning_rate(step: int, total: int, params: dict[str, Any]) -> float:
    """Linear warm-up to lr over warmup_steps, then cosine down to lr/10 at `total`."""
    peak, warmup = float(params.get("lr", 3e-3)), int(params.get("warmup_steps", 10))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(ctx: TrainContext) -> None:
    torch.manual_seed(ctx.seed)
    model = build_model(ctx.params)
    count = float(sum(p.numel() for p in model.parameters()))
    flops = flops_per_token(model, ctx.params, MAX_LENGTH)
    trained = ctx.prepare_model(model)
    optimizer = build_optimizer(model, ctx.params)
    ctx.restore(model, optimizer)
    batch_size = int(ctx.params.get("batch_size", 16))
    accumulate = ctx.parallel.accumulate_steps
    steps_per_epoch = math.ceil(ctx.num_train_batches(batch_size) / accumulate)
    total_steps = steps_per_epoch * ctx.num_epochs
    peak = peak_flops(ctx.device, ctx.params)
    compile_left_out = False

    for epoch in range(ctx.start_epoch, ctx.num_epochs):
        trained.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        tokens = torch.zeros((), dtype=torch.float64, device=ctx.device)
        started = time.perf_counter()
        lr = 0.0
        for i, batch in enumerate(ctx.train_batches(epoch, batch_size,
                                                    state=lambda: ctx.state(model, optimizer))):
            step = epoch * steps_per_epoch + (ctx.start_step if epoch == ctx.start_epoch else 0) // accumulate \
                + i // accumulate
            lr = learning_rate(step, total_steps, ctx.params)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with ctx.autocast():
                summed, n = token_loss(trained(batch), batch)
            ctx.backward(summed / n.clamp(min=1), optimizer)
            loss_sum += summed.detach().double()
            tokens += n.double()
        elapsed = time.perf_counter() - started
        if ctx.compile_s is not None and not compile_left_out:
            elapsed, compile_left_out = max(elapsed - ctx.compile_s, 1e-9), True
        trained.eval()
        val_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        val_tokens = torch.zeros((), dtype=torch.float64, device=ctx.device)
        with torch.no_grad(), ctx.autocast():
            for batch in ctx.validation_batches(64):
                summed, n = token_loss(model(batch), batch)
                val_sum, val_tokens = val_sum + summed.double(), val_tokens + n.double()
        train_sum, train_tokens, val_total, val_count = ctx.all_reduce_sum(
            [float(loss_sum), float(tokens), float(val_sum), float(val_tokens)])
        tokens_per_s = train_tokens / max(ctx.all_reduce_max([elapsed])[0], 1e-9)
        achieved = tokens_per_s * flops
        metrics = {"epoch": epoch, "train_loss": train_sum / max(train_tokens, 1),
                   "val_loss": val_total / max(val_count, 1), "tokens_per_s": tokens_per_s,
                   "model_tflops": achieved / 1e12, "lr": lr, "params_count": count}
        if peak is not None:
            metrics["mfu"] = achieved / (peak * ctx.world_size)
        ctx.report(metrics, checkpoint={**ctx.state(model, optimizer), "epoch": epoch})
