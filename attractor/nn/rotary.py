"""Rotary position embeddings (RoFormer, Su et al. 2021), in two pair layouts."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

RopeLayout = Literal["half", "interleaved"]


class Rotary(nn.Module):
    """Rotary position embedding tables (RoFormer, Su et al. 2021).

    Position p rotates pair i of a head by the angle p * theta_i, with
    theta_i = base^(-2i/Dh). `forward(T, start)` returns cos and sin, each (T, Dh/2), for
    positions start .. start+T-1. The tables are non-persistent buffers, regrown on demand.
    Which channels form pair i is the layout's business (`apply_rotary`).
    """

    def __init__(self, head_dim: int, max_seq_len: int = 2048, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"Rotary: head_dim must be even, got {head_dim}")
        self.head_dim, self.base = head_dim, base
        self._build(max_seq_len, device=None)

    def _build(self, n: int, device: torch.device | None) -> None:
        i = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
        inv_freq = self.base ** (-i / self.head_dim)  # (Dh/2,)
        t = torch.arange(n, dtype=torch.float32, device=device)
        angles = torch.outer(t, inv_freq)  # (n, Dh/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, T: int, start: int = 0) -> tuple[Tensor, Tensor]:
        end = start + T
        if end > self.cos.size(0):
            self._build(max(end, 2 * self.cos.size(0)), device=self.cos.device)
        return self.cos[start:end], self.sin[start:end]  # (T, Dh/2) each


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, layout: RopeLayout = "half") -> Tensor:
    """Rotate x (..., Dh) by the tables of `Rotary`, cos and sin broadcasting against x's
    (..., Dh/2): (T, Dh/2) for x (B, H, T, Dh), (T, 1, Dh/2) for x (B, T, H, Dh). Pair i
    is (x_i, x_{i+Dh/2}) in the "half" layout (GPT-NeoX, Llama in Hugging Face form) and
    (x_2i, x_2i+1) in the "interleaved" one (RoFormer's original, the paper's code); each
    pair (a, b) becomes (a cos - b sin, a sin + b cos). With gradients autograd saves the
    tables only (a product with a constant saves the constant)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if layout == "half":
        d = x.size(-1) // 2
        a, b = x[..., :d], x[..., d:]  # (..., Dh/2)
        return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]  # (..., Dh/2)
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
