"""Rotary position embeddings (RoFormer, Su et al. 2021)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Rotary(nn.Module):
    """Rotary position embedding tables (RoFormer, Su et al. 2021).

    Position p rotates the pair (x_i, x_{i+Dh/2}) by the angle p * theta_i, with
    theta_i = base^(-2i/Dh). `forward(T, start)` returns cos and sin, each (T, Dh/2), for
    positions start .. start+T-1. The tables are non-persistent buffers, regrown on demand.
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


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, H, T, Dh) by the tables of `Rotary`: with x1, x2 the two halves of Dh,
    y = [x1 cos - x2 sin, x1 sin + x2 cos]."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]  # (B, H, T, Dh/2)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (T, Dh/2), broadcast over B, H
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
