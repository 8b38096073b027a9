"""The two MLPs of the blocks: squared ReLU (the language models) and SwiGLU (grids)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from attractor.nn.gated_linear import gated_linear


def _relu2(u: Tensor, scale: float) -> Tensor:
    """s relu(u)^2, by the ops (and in the order) of `F.relu(u).square()` then `s * h`."""
    h = F.relu(u).square()
    return h if scale == 1.0 else h.mul_(scale)


class _ReLU2(torch.autograd.Function):
    """h = s relu(u)^2 as one autograd node that saves its output h only, the tensor the
    next linear layer saves anyway (autograd through relu then square keeps relu(u) too).

    The derivative 2 s relu(u) is read back from h: relu(u) = sqrt(h / s), exactly in
    binary floating point when s is a power of two (sqrt of a correctly rounded square
    is the number itself, barring overflow and underflow; to within an ulp for other s).
    Twice differentiable through `_ReLU2Grad`.
    """

    @staticmethod
    def forward(ctx, u: Tensor, scale: float) -> Tensor:
        h = _relu2(u, scale)
        ctx.save_for_backward(h)
        ctx.scale = scale
        return h

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:
        (h,) = ctx.saved_tensors
        return _ReLU2Grad.apply(g, h, ctx.scale), None


class _ReLU2Grad(torch.autograd.Function):
    """dL/du = (g s) (2 r), r = sqrt(h / s) = relu(u): the backward of `_ReLU2` as a node
    of its own, so that a double backward (`jacobian_penalty`) has the derivative in h."""

    @staticmethod
    def forward(ctx, g: Tensor, h: Tensor, scale: float) -> Tensor:
        r = (h if scale == 1.0 else h / scale).sqrt()
        ctx.save_for_backward(g, r)
        ctx.scale = scale
        return (g if scale == 1.0 else g * scale) * (2 * r)

    @staticmethod
    @once_differentiable
    def backward(ctx, gg: Tensor) -> tuple[Tensor, Tensor, None]:
        # d/dg = 2 s r; d/dh = g / r where r > 0 (= g s 2 dr/dh), and 0 where relu(u) = 0
        g, r = ctx.saved_tensors
        dg = (gg if ctx.scale == 1.0 else gg * ctx.scale) * (2 * r)
        dh = torch.where(r > 0, gg * g / r.masked_fill(r == 0, 1.0), 0.0)
        return dg, dh, None


def relu2(u: Tensor, scale: float = 1.0) -> Tensor:
    """s relu(u)^2 (Primer's squared ReLU); with gradients it saves only its output."""
    if torch.is_grad_enabled() and u.requires_grad:
        return _ReLU2.apply(u, scale)
    return _relu2(u, scale)


def _out(linear: nn.Linear, h: Tensor, gate: Tensor | None) -> Tensor:
    """linear(h), or gate * linear(h) without keeping linear(h) (`gated_linear`)."""
    return linear(h) if gate is None else gated_linear(h, linear.weight, linear.bias, gate)


class ReLU2MLP(nn.Module):
    """Squared-ReLU MLP (So et al. 2021, Primer): y = W2 (s relu(W1 x)^2). No biases. The
    paper's code (its `Relu2`) has s = 0.5; ours s = 1. `gate` (dim,) multiplies y."""

    def __init__(self, dim: int, hidden: int, scale: float = 1.0):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.scale = scale

    def forward(self, x: Tensor, gate: Tensor | None = None) -> Tensor:
        return _out(self.w2, relu2(self.w1(x), self.scale), gate)  # (B, T, C)


class SwiGLU(nn.Module):
    """Gated MLP (Shazeer 2020): y = W2 (s silu(W1 x) * W3 x). No biases. `gate` (dim,)
    multiplies y."""

    def __init__(self, dim: int, hidden: int, scale: float = 1.0):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.scale = scale

    def forward(self, x: Tensor, gate: Tensor | None = None) -> Tensor:
        h = F.silu(self.w1(x)) * self.w3(x)  # (B, T, hidden)
        return _out(self.w2, h if self.scale == 1.0 else self.scale * h, gate)  # (B, T, C)


MLPS = {"relu2": ReLU2MLP, "swiglu": SwiGLU}
