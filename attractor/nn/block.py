"""Transformer blocks: `Block`, the plain pre-norm block of every backbone; `PostNormBlock`,
TRM's block for recursive nets; and `GatedBlock`, the attractor head's block with
per-channel gates (docs/method.md section 2.1)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attractor.nn.attention import Attention
from attractor.nn.kv_cache import KVCache
from attractor.nn.mlp import MLPS
from attractor.nn.norm import RMSNorm

# The largest g_init / g_max a gate can start at: sigmoid(rho) = 1 needs rho = +inf.
GATE_RATIO_MAX = 1.0 - 1e-3


class Block(nn.Module):
    """Pre-norm transformer block: h = x + Attn(norm1 x); out = h + MLP(norm2 h).

    `attn_branch` and `mlp_branch` return the two residual branches on their own.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_hidden: int,
        n_kv_heads: int | None = None,
        causal: bool = True,
        mlp: str = "relu2",
        qk_norm: bool = True,
        max_seq_len: int = 2048,
    ):
        super().__init__()
        if mlp not in MLPS:
            raise ValueError(f"Block: mlp must be one of {sorted(MLPS)}, got {mlp!r}")
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(
            dim, n_heads, n_kv_heads, causal=causal, qk_norm=qk_norm, max_seq_len=max_seq_len
        )
        self.norm2 = RMSNorm(dim)
        self.mlp = MLPS[mlp](dim, mlp_hidden)

    def attn_branch(
        self, x: Tensor, cache: KVCache | None = None, value_embed: Tensor | None = None
    ) -> Tensor:
        """Attn(norm1 x), (B, T, C)."""
        return self.attn(self.norm1(x), cache, value_embed)

    def mlp_branch(self, h: Tensor) -> Tensor:
        """MLP(norm2 h), (B, T, C)."""
        return self.mlp(self.norm2(h))

    def forward(
        self, x: Tensor, cache: KVCache | None = None, value_embed: Tensor | None = None
    ) -> Tensor:
        h = x + self.attn_branch(x, cache, value_embed)  # (B, T, C)
        return h + self.mlp_branch(h)


class PostNormBlock(Block):
    """TRM's block: h = N(x + Attn(x)); out = N(h + MLP(h)). With N's weights at their
    initial 1, outputs have unit RMS per token, which keeps a recursion of the same block
    bounded."""

    def forward(
        self, x: Tensor, cache: KVCache | None = None, value_embed: Tensor | None = None
    ) -> Tensor:
        h = self.norm1(x + self.attn(x, cache, value_embed))
        return self.norm2(h + self.mlp(h))


class GatedBlock(Block):
    """The attractor head's block (docs/method.md section 2.1): each branch is gated per
    channel,

    h = x + g_a * Attn(norm1 x);  out = h + g_m * MLP(norm2 h);  g = g_max * sigmoid(rho),

    with rho of shape (C,) initialised to logit(g_init / g_max) so that g = g_init. Since
    g = g_max needs rho = +inf, the starting ratio is clamped to GATE_RATIO_MAX = 1 - 1e-3:
    g_init == g_max starts at g = 0.999 * g_max. Output projections keep the normal (non-zero)
    initialisation: a zero branch would make the head a constant map.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_hidden: int,
        n_kv_heads: int | None = None,
        causal: bool = True,
        mlp: str = "relu2",
        qk_norm: bool = True,
        max_seq_len: int = 2048,
        gate_init: float = 0.75,
        gate_max: float = 0.75,
    ):
        super().__init__(dim, n_heads, mlp_hidden, n_kv_heads, causal, mlp, qk_norm, max_seq_len)
        if not 0.0 < gate_init <= gate_max:
            raise ValueError(
                f"GatedBlock: need 0 < gate_init <= gate_max, got {gate_init}, {gate_max}"
            )
        self.gate_init, self.gate_max = gate_init, gate_max
        self.rho_attn = nn.Parameter(torch.empty(dim))
        self.rho_mlp = nn.Parameter(torch.empty(dim))
        self.reset_gates()

    def reset_gates(self) -> None:
        """Set rho = logit(min(g_init / g_max, GATE_RATIO_MAX))."""
        r = min(self.gate_init / self.gate_max, GATE_RATIO_MAX)
        with torch.no_grad():
            self.rho_attn.fill_(math.log(r / (1.0 - r)))
            self.rho_mlp.fill_(math.log(r / (1.0 - r)))

    def gates(self) -> tuple[Tensor, Tensor]:
        """(g_a, g_m), each (C,): g = g_max * sigmoid(rho)."""
        return self.gate_max * self.rho_attn.sigmoid(), self.gate_max * self.rho_mlp.sigmoid()

    def forward(
        self, x: Tensor, cache: KVCache | None = None, value_embed: Tensor | None = None
    ) -> Tensor:
        g_a, g_m = self.gates()
        h = x + g_a.to(x.dtype) * self.attn_branch(x, cache, value_embed)  # (B, T, C)
        return h + g_m.to(x.dtype) * self.mlp_branch(h)
