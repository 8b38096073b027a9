"""Transformer blocks: `Block`, the plain pre-norm block of every backbone; `PostNormBlock`,
TRM's block for recursive nets; and `GatedBlock`, the attractor head's block with
per-channel gates (docs/method.md section 2.1)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attractor.nn.attention import Attention, QKNorm
from attractor.nn.kv_cache import KVCache
from attractor.nn.mlp import MLPS
from attractor.nn.norm import RMSNorm
from attractor.nn.rotary import RopeLayout

# How far below 1 the starting ratio g_init / g_max is clamped: sigmoid(rho) = 1 needs
# rho = +inf. Ours 1e-3; the paper's code 1e-6 (its FixedPointBlock).
GATE_CLAMP = 1e-3
GATE_RATIO_MAX = 1.0 - GATE_CLAMP

# A value embedding as a block receives it: the tensor itself, or a function of the
# attention's normed input that makes it (the paper's gate reads norm1 x).
ValueEmbed = Tensor | Callable[[Tensor], Tensor] | None


@dataclass(frozen=True)
class BlockStyle:
    """The numerics of a block that do not change its shape: RMSNorm eps, the QK-norm form,
    the rotary base and pair layout, and the MLP's activation scale. The defaults are ours;
    the paper's code uses 1e-5, "weightless", 50000, "interleaved" and 0.5."""

    norm_eps: float = 1e-6
    qk_norm: QKNorm = "learned"
    rope_base: float = 10000.0
    rope_layout: RopeLayout = "half"
    mlp_scale: float = 1.0


class Block(nn.Module):
    """Pre-norm transformer block: h = x + Attn(norm1 x); out = h + MLP(norm2 h).

    `attn_branch` and `mlp_branch` return the two residual branches on their own. A
    value embedding given as a function is called on norm1 x.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_hidden: int,
        n_kv_heads: int | None = None,
        causal: bool = True,
        mlp: str = "relu2",
        max_seq_len: int = 2048,
        style: BlockStyle | None = None,
    ):
        super().__init__()
        if mlp not in MLPS:
            raise ValueError(f"Block: mlp must be one of {sorted(MLPS)}, got {mlp!r}")
        s = style or BlockStyle()
        self.norm1 = RMSNorm(dim, s.norm_eps)
        self.attn = Attention(
            dim,
            n_heads,
            n_kv_heads,
            causal=causal,
            qk_norm=s.qk_norm,
            max_seq_len=max_seq_len,
            rope_base=s.rope_base,
            rope_layout=s.rope_layout,
            norm_eps=s.norm_eps,
        )
        self.norm2 = RMSNorm(dim, s.norm_eps)
        self.mlp = MLPS[mlp](dim, mlp_hidden, s.mlp_scale)

    def attn_branch(
        self, x: Tensor, cache: KVCache | None = None, value_embed: ValueEmbed = None
    ) -> Tensor:
        """Attn(norm1 x), (B, T, C)."""
        h = self.norm1(x)
        return self.attn(h, cache, value_embed(h) if callable(value_embed) else value_embed)

    def mlp_branch(self, h: Tensor) -> Tensor:
        """MLP(norm2 h), (B, T, C)."""
        return self.mlp(self.norm2(h))

    def forward(
        self, x: Tensor, cache: KVCache | None = None, value_embed: ValueEmbed = None
    ) -> Tensor:
        h = x + self.attn_branch(x, cache, value_embed)  # (B, T, C)
        return h + self.mlp_branch(h)


class PostNormBlock(Block):
    """TRM's block: h = N(x + Attn(x)); out = N(h + MLP(h)). With N's weights at their
    initial 1, outputs have unit RMS per token, which keeps a recursion of the same block
    bounded."""

    def forward(
        self, x: Tensor, cache: KVCache | None = None, value_embed: ValueEmbed = None
    ) -> Tensor:
        ve = value_embed(x) if callable(value_embed) else value_embed
        h = self.norm1(x + self.attn(x, cache, ve))
        return self.norm2(h + self.mlp(h))


class GatedBlock(Block):
    """The attractor head's block (docs/method.md section 2.1): each branch is gated per
    channel,

    h = x + g_a * Attn(norm1 x);  out = h + g_m * MLP(norm2 h);  g = g_max * sigmoid(rho),

    with rho of shape (C,) initialised to logit(g_init / g_max) so that g = g_init. Since
    g = g_max needs rho = +inf, the starting ratio is clamped to 1 - gate_clamp (ours 1e-3:
    g_init == g_max starts at g = 0.999 * g_max; the paper's code 1e-6, rho = 13.8, where
    sigmoid's slope is 1e-6, so its gates stay at g_max in practice). Output projections
    keep the normal (non-zero) initialisation: a zero branch would make the head a constant
    map.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_hidden: int,
        n_kv_heads: int | None = None,
        causal: bool = True,
        mlp: str = "relu2",
        max_seq_len: int = 2048,
        style: BlockStyle | None = None,
        gate_init: float = 0.75,
        gate_max: float = 0.75,
        gate_clamp: float = GATE_CLAMP,
    ):
        super().__init__(dim, n_heads, mlp_hidden, n_kv_heads, causal, mlp, max_seq_len, style)
        if not 0.0 < gate_init <= gate_max:
            raise ValueError(
                f"GatedBlock: need 0 < gate_init <= gate_max, got {gate_init}, {gate_max}"
            )
        if not 0.0 < gate_clamp < 0.5:
            raise ValueError(f"GatedBlock: need 0 < gate_clamp < 0.5, got {gate_clamp}")
        self.gate_init, self.gate_max, self.gate_clamp = gate_init, gate_max, gate_clamp
        self.rho_attn = nn.Parameter(torch.empty(dim))
        self.rho_mlp = nn.Parameter(torch.empty(dim))
        self.reset_gates()

    def reset_gates(self) -> None:
        """Set rho = logit(min(g_init / g_max, 1 - gate_clamp))."""
        r = min(self.gate_init / self.gate_max, 1.0 - self.gate_clamp)
        with torch.no_grad():
            self.rho_attn.fill_(math.log(r / (1.0 - r)))
            self.rho_mlp.fill_(math.log(r / (1.0 - r)))

    def gates(self) -> tuple[Tensor, Tensor]:
        """(g_a, g_m), each (C,): g = g_max * sigmoid(rho)."""
        return self.gate_max * self.rho_attn.sigmoid(), self.gate_max * self.rho_mlp.sigmoid()

    def forward(
        self, x: Tensor, cache: KVCache | None = None, value_embed: ValueEmbed = None
    ) -> Tensor:
        g_a, g_m = self.gates()
        h = x + g_a.to(x.dtype) * self.attn_branch(x, cache, value_embed)  # (B, T, C)
        return h + g_m.to(x.dtype) * self.mlp_branch(h)
