"""A byte-level language model over variable-length token lists (next-token loss).

The spec names one column, `tokens` (list<int32>), so every batch is a dict:
`tokens` padded to the batch's longest row (pad 0, cut at `max_length`) and
`tokens_lengths` (int64). No label column: the targets are the inputs shifted by one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from raysweep import TrainContext

VOCAB_SIZE = 257  # raysweep.data.examples.VOCAB_SIZE: a UTF-8 byte + 1, 0 is padding


class CharLM(nn.Module):
    """Embedding -> GRU -> next-token logits; takes the batch dict."""

    def __init__(self, embed: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, embed, padding_idx=0)
        self.rnn = nn.GRU(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, VOCAB_SIZE)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden, _ = self.rnn(self.embed(batch["tokens"].long()))
        return self.out(hidden)


def build_model(params: dict[str, Any]) -> nn.Module:
    return CharLM(int(params.get("embed", 32)), int(params.get("hidden", 64)))


def token_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token cross-entropy, number of predicted tokens) over the real tokens."""
    tokens = batch["tokens"].long()
    positions = torch.arange(tokens.shape[1] - 1, device=tokens.device)
    mask = positions[None, :] < (batch["tokens_lengths"][:, None] - 1)
    losses = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB_SIZE), tokens[:, 1:].reshape(-1),
                                         reduction="none").view_as(mask)
    return (losses * mask).sum(), mask.sum()


def train(ctx: TrainContext) -> None:
    torch.manual_seed(ctx.seed)
    model = build_model(ctx.params)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(ctx.params.get("lr", 3e-3)))
    if ctx.checkpoint is not None:
        model.load_state_dict(ctx.checkpoint["model"])
        optimizer.load_state_dict(ctx.checkpoint["optimizer"])
    ddp_model = ctx.prepare_model(model)
    batch_size = int(ctx.params.get("batch_size", 32))
    for epoch in range(ctx.start_epoch, ctx.num_epochs):
        ddp_model.train()
        train_sum, train_count = 0.0, 0.0
        for batch in ctx.train_batches(epoch, batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss_sum, count = token_loss(ddp_model(batch), batch)
            (loss_sum / count.clamp(min=1)).backward()
            optimizer.step()
            train_sum, train_count = train_sum + float(loss_sum), train_count + float(count)
        model.eval()
        val_sum, val_count = 0.0, 0.0
        with torch.no_grad():
            for batch in ctx.validation_batches(256):
                loss_sum, count = token_loss(model(batch), batch)
                val_sum, val_count = val_sum + float(loss_sum), val_count + float(count)
        train_sum, train_count, val_sum, val_count = ctx.all_reduce_sum([train_sum, train_count, val_sum, val_count])
        ctx.report({"epoch": epoch, "train_loss": train_sum / train_count, "val_loss": val_sum / val_count},
                   checkpoint={"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch})
