"""GPT baseline: a stack of pre-norm causal blocks (DESIGN.md 2.4), with nanochat-style
value embeddings on alternate layers and a tied output embedding."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attractor.layers import KVCache, RMSNorm, init_weights
from attractor.models.base import LanguageModel, ModelOutput, block_stack, next_token_loss


@dataclass
class GPTConfig:
    vocab_size: int = 32768
    dim: int = 768
    n_layers: int = 6
    n_heads: int = 6
    n_kv_heads: int | None = None
    mlp_ratio: int = 4
    mlp: str = "relu2"
    max_seq_len: int = 2048
    value_embeds: bool = True  # a vocab x kv_dim table on alternate layers, gated
    embed_scale: float = 1.0  # s in x~ = s * E[x]
    init_std: float = 0.02


class ValueEmbedding(nn.Module):
    """Rows of a vocab x kv_dim table added to a layer's attention values (nanochat):
    v <- v + g(x) * V[ids], with a per-KV-head gate g = 2 sigmoid(W x[:, :, :k]) that
    starts near 1."""

    def __init__(self, vocab_size: int, kv_dim: int, n_kv_heads: int, gate_channels: int = 32):
        super().__init__()
        self.table = nn.Embedding(vocab_size, kv_dim)
        self.gate = nn.Linear(gate_channels, n_kv_heads, bias=False)
        self.n_kv_heads, self.gate_channels = n_kv_heads, gate_channels

    def forward(self, ids: Tensor, x: Tensor) -> Tensor:
        """ids (B, T), x (B, T, C) -> (B, T, kv_dim)."""
        ve = self.table(ids)  # (B, T, Hkv*Dh)
        g = 2.0 * torch.sigmoid(self.gate(x[..., : self.gate_channels]))  # (B, T, Hkv)
        B, T, _ = ve.shape
        return (ve.view(B, T, self.n_kv_heads, -1) * g.unsqueeze(-1)).view(B, T, -1)


def value_embed_layers(n_layers: int) -> list[int]:
    """Alternate layers, ending on the last one (0-based)."""
    return [i for i in range(n_layers) if (n_layers - 1 - i) % 2 == 0]


def value_embeddings(config: Any, n_layers: int) -> nn.ModuleDict:
    """A ValueEmbedding for each of value_embed_layers(n_layers), keyed by layer index, or
    none when config.value_embeds is off."""
    c = config
    kv_heads = c.n_kv_heads or c.n_heads
    kv_dim = kv_heads * (c.dim // c.n_heads)
    layers = value_embed_layers(n_layers) if c.value_embeds else []
    return nn.ModuleDict({str(i): ValueEmbedding(c.vocab_size, kv_dim, kv_heads) for i in layers})


class GPT(LanguageModel):
    kind = "gpt"

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.blocks = block_stack(c, c.n_layers)
        self.value_embeds = value_embeddings(c, c.n_layers)
        self.norm = RMSNorm(c.dim)
        init_weights(self, c.init_std, c.init_std / math.sqrt(2 * c.n_layers))

    def hidden(self, ids: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """The residual stream after every block, (B, T, C), before the final norm."""
        x = self.config.embed_scale * self.embed(ids)  # (B, T, C)
        for i, block in enumerate(self.blocks):
            ve = self.value_embeds[str(i)](ids, x) if str(i) in self.value_embeds else None
            x = block(x, None if caches is None else caches[i], ve)
        return x

    def decode(self, h: Tensor) -> Tensor:
        """logits = E . RMSNorm(h), tied with the input embedding: (B, T, V)."""
        return self.norm(h) @ self.embed.weight.T

    def forward(
        self, input_ids: Tensor, labels: Tensor | None = None, steps: int | None = None
    ) -> ModelOutput:
        """Logits (and loss with labels); a GPT has no solver depth, so `steps` must be None."""
        if steps is not None:
            raise ValueError("gpt: a fixed-depth transformer takes no steps=; it has no solver")
        logits = self.decode(self.hidden(input_ids))
        loss = None if labels is None else next_token_loss(logits, labels)
        return ModelOutput(logits=logits, loss=loss)

    def new_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]

    def extend(self, new_ids: Tensor, cache: list[KVCache]) -> Tensor:
        return self.decode(self.hidden(new_ids, cache))
