"""The two MLPs of the blocks: squared ReLU (the language models) and SwiGLU (grids)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ReLU2MLP(nn.Module):
    """Squared-ReLU MLP (So et al. 2021, Primer): y = W2 (s relu(W1 x)^2). No biases. The
    paper's code (its `Relu2`) has s = 0.5; ours s = 1."""

    def __init__(self, dim: int, hidden: int, scale: float = 1.0):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.w1(x)).square()  # (B, T, hidden)
        return self.w2(h if self.scale == 1.0 else self.scale * h)  # (B, T, C)


class SwiGLU(nn.Module):
    """Gated MLP (Shazeer 2020): y = W2 (s silu(W1 x) * W3 x). No biases."""

    def __init__(self, dim: int, hidden: int, scale: float = 1.0):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.w1(x)) * self.w3(x)  # (B, T, hidden)
        return self.w2(h if self.scale == 1.0 else self.scale * h)  # (B, T, C)


MLPS = {"relu2": ReLU2MLP, "swiglu": SwiGLU}
