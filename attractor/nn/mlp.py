"""The two MLPs of the blocks: squared ReLU (the language models) and SwiGLU (grids)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def _relu2(u: Tensor, scale: float) -> Tensor:
    """h = s relu(u)^2. The square is r * r, not `square()`: the same values (torch's pow
    with exponent 2 is x * x), but CUDA autocast runs pow in float32 (the PyTorch AMP
    docs, "CUDA Ops that can autocast to float32"), which would make h a float32 tensor."""
    r = F.relu(u)
    h = r * r
    return h if scale == 1.0 else h.mul_(scale)


class _ReLU2(torch.autograd.Function):
    """h = s relu(u)^2 as one autograd node that saves its output h only, the tensor the
    next linear layer saves anyway (autograd through relu then square keeps relu(u) too).

    The derivative dh/du = 2 s relu(u) is read back from h: relu(u) = sqrt(h / s). In
    binary floating point the correctly rounded square root of a correctly rounded square
    is the number itself (no overflow or underflow) and h / s is exact for s a power of
    two (the scales used: 1 and 0.5); torch's vectorised CPU sqrt is within one ulp of
    that. Twice differentiable through `_ReLU2Grad`.
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
    of its own, so that a double backward (`jacobian_penalty`) has its derivative in h."""

    @staticmethod
    def forward(ctx, g: Tensor, h: Tensor, scale: float) -> Tensor:
        r = (h if scale == 1.0 else h / scale).sqrt()
        ctx.save_for_backward(g, r)
        ctx.scale = scale
        return (g if scale == 1.0 else g * scale) * (2 * r)

    @staticmethod
    @once_differentiable
    def backward(ctx, gg: Tensor) -> tuple[Tensor, Tensor, None]:
        # d/dg = 2 s r; d/dh = g s 2 dr/dh = g / r where r > 0, and 0 where relu(u) = 0
        # (there dh/du = 0 as well, so the chain through h carries nothing)
        g, r = ctx.saved_tensors
        dg = (gg if ctx.scale == 1.0 else gg * ctx.scale) * (2 * r)
        dh = torch.where(r > 0, gg * g / r.masked_fill(r == 0, 1.0), 0.0)
        return dg, dh, None


def relu2(u: Tensor, scale: float = 1.0) -> Tensor:
    """h = s relu(u)^2 (Primer's squared ReLU); with gradients it saves only h (`_ReLU2`).

    float16 keeps plain autograd: its squares of |u| < 2^-7 are subnormal or zero, and
    sqrt(h) would lose relu(u)'s precision there; bfloat16 has float32's exponent range."""
    if torch.is_grad_enabled() and u.requires_grad and u.dtype != torch.float16:
        return _ReLU2.apply(u, scale)
    return _relu2(u, scale)


class ReLU2MLP(nn.Module):
    """Squared-ReLU MLP (So et al. 2021, Primer): y = W2 (s relu(W1 x)^2). No biases. The
    paper's code (its `Relu2`) has s = 0.5; ours s = 1."""

    def __init__(self, dim: int, hidden: int, scale: float = 1.0):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(relu2(self.w1(x), self.scale))  # (B, T, hidden) -> (B, T, C)


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
