"""Value embeddings (nanochat): per-token tables added to the attention values of
alternate layers, gated; how the paper's GPT and looped presets reach their sizes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from attractor.nn.optim_groups import set_optim_group
from attractor.nn.shape import TransformerShape


class ValueEmbedding(nn.Module):
    """Rows of a vocab x kv_dim table added to a layer's attention values (nanochat):
    v <- v + g(x) * V[ids], with a per-KV-head gate g = 2 sigmoid(W x[:, :, :k]) that
    starts near 1. The table is an embedding (optimizer group "embed"); the gate is a
    small matrix trained by AdamW, not Muon. Which x the gate reads (the residual stream,
    ours, or the attention's normed input, the paper's code) is the model's choice."""

    def __init__(self, vocab_size: int, kv_dim: int, n_kv_heads: int, gate_channels: int = 32):
        super().__init__()
        self.table = nn.Embedding(vocab_size, kv_dim)
        self.gate = set_optim_group(nn.Linear(gate_channels, n_kv_heads, bias=False), "adamw")
        self.n_kv_heads, self.gate_channels = n_kv_heads, gate_channels

    def forward(self, ids: Tensor, x: Tensor) -> Tensor:
        """ids (B, T), x (B, T, C) -> (B, T, kv_dim)."""
        ve = self.table(ids)  # (B, T, Hkv*Dh)
        g = 2.0 * torch.sigmoid(self.gate(x[..., : self.gate_channels]))  # (B, T, Hkv)
        B, T, _ = ve.shape
        return (ve.view(B, T, self.n_kv_heads, -1) * g.unsqueeze(-1)).view(B, T, -1)


# What the gate reads: the block's input residual stream (ours) or the attention's normed
# input, norm1 x (the paper's code: `ve_gate(x[..., :32])` inside its attention).
GateInput = Literal["residual", "normed"]


def value_embed_for(
    ve: ValueEmbedding, ids: Tensor, x: Tensor, gate_input: GateInput
) -> Tensor | Callable[[Tensor], Tensor]:
    """What a block takes as its value embedding: ve(ids, x) from the residual stream x, or
    for "normed" the function of norm1 x that the block calls (`attractor.nn.block`)."""
    return ve(ids, x) if gate_input == "residual" else partial(ve, ids)


def value_embed_layers(n_layers: int) -> list[int]:
    """Alternate layers, ending on the last one (0-based)."""
    return [i for i in range(n_layers) if (n_layers - 1 - i) % 2 == 0]


def value_embeddings(shape: TransformerShape, n_layers: int, enabled: bool) -> nn.ModuleDict:
    """A ValueEmbedding for each of value_embed_layers(n_layers), keyed by layer index (none
    when not `enabled`), with as many rows as the shape's token table."""
    kv_heads = shape.kv_heads
    layers = value_embed_layers(n_layers) if enabled else []
    return nn.ModuleDict(
        {str(i): ValueEmbedding(shape.table_size, shape.kv_dim, kv_heads) for i in layers}
    )


def init_value_tables(
    tables: Iterable[ValueEmbedding], std: float | None, init: str = "gpt"
) -> None:
    """Redraw the tables ~ N(0, std^2) (the paper's code: std 1). std None: under the model's
    init "gpt" they stay as `init_weights` drew them (N(0, init_std^2), ours), under
    "scaled-orthogonal" (the paper's initialisation) N(0, 1)."""
    if std is None and init == "scaled-orthogonal":
        std = 1.0
    if std is None:
        return
    for ve in tables:
        nn.init.normal_(ve.table.weight, 0.0, std)


def value_embed_flops(tables: Iterable[ValueEmbedding]) -> float:
    """Forward FLOPs per token of the gates of these value embeddings (a small Linear each)."""
    return sum(2.0 * ve.gate.in_features * ve.gate.out_features for ve in tables)
