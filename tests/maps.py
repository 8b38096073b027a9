"""Test maps with known contraction, shared by the solver and gradient tests."""

from __future__ import annotations

import torch
from torch import Tensor


def symmetric_matrix(d: int, radius: float, seed: int = 0) -> Tensor:
    """A float64 symmetric d x d matrix with eigenvalues spread evenly over [-radius, radius]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.linspace(-radius, radius, d, dtype=torch.float64)) @ q.T


def scaled_matrix(d: int, norm: float, seed: int = 0) -> Tensor:
    """A random float64 d x d matrix rescaled to spectral norm ``norm``."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, d, generator=g, dtype=torch.float64)
    return norm * w / torch.linalg.matrix_norm(w, 2)


class TanhMap:
    """f(y) = tanh(W y + U x + b): a contraction with constant <= |W|_2 (tanh is 1-Lipschitz)."""

    def __init__(self, d: int = 16, batch: int = 3, norm: float = 0.9, seed: int = 0):
        g = torch.Generator().manual_seed(seed + 1)
        self.W = scaled_matrix(d, norm, seed).requires_grad_()
        self.U = (0.5 * torch.randn(d, d, generator=g, dtype=torch.float64)).requires_grad_()
        self.b = (0.1 * torch.randn(d, generator=g, dtype=torch.float64)).requires_grad_()
        self.x = torch.randn(batch, d, generator=g, dtype=torch.float64).requires_grad_()
        self.y0 = (0.1 * torch.randn(batch, d, generator=g, dtype=torch.float64)).requires_grad_()

    def __call__(self, y: Tensor) -> Tensor:
        return torch.tanh(y @ self.W.T + self.x @ self.U.T + self.b)

    @property
    def params(self) -> list[Tensor]:
        return [self.W, self.U, self.b, self.x, self.y0]
