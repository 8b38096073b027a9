"""Root-mean-square normalisation, with a backward that saves only the input and 1/rms."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _inv_rms(x: Tensor, eps: float) -> Tensor:
    """1 / sqrt(mean(x^2) + eps) over the last dim, keepdim: the ops of torch's own CPU
    `F.rms_norm`, in the same order, so that the result is bit-identical to it."""
    return x.pow(2).mean(-1, keepdim=True).add(eps).rsqrt()


class _RMSNorm(torch.autograd.Function):
    """y = x r w with r = 1 / sqrt(mean(x^2) + eps), in float32, cast back to x's dtype.

    Saves x (in its own dtype, not a float32 copy) and r: autograd through `F.rms_norm`
    keeps x r as well, for the weight's gradient; here it is remade from x and r in
    backward. Twice differentiable: under ``create_graph`` r is recomputed from x, so
    that the backward formula is a function of x that autograd can differentiate.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
        xf = x.float()
        r = _inv_rms(xf, eps)
        y = xf * r
        if weight is not None:
            y = y * weight.float()
        ctx.save_for_backward(x, weight, r)
        ctx.eps = eps
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        # the steps autograd takes back through _inv_rms and the products, in its order
        x, weight, r = ctx.saved_tensors
        xf, gf = x.float(), g.float()
        if torch.is_grad_enabled():  # create_graph: r as a differentiable function of x
            r = _inv_rms(xf, ctx.eps)
        gw = gf if weight is None else gf * weight.float()
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dr = (gw * xf).sum(-1, keepdim=True)
            dmean = (dr * -0.5) * r.pow(3)  # rsqrt's derivative, then mean's: / C
            dx = (gw * r + (dmean / x.size(-1)) * (2.0 * xf)).to(x.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            lead = tuple(range(x.dim() - 1))
            dw = (gf * (xf * r)).sum(lead).to(weight.dtype)
        return dx, dw, None


def rms_norm(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dim, computed in float32 and cast
    back to x's dtype; the same values as `F.rms_norm(x.float(), ...)`. With gradients it
    saves x and 1/rms only (`_RMSNorm`)."""
    needs_grad = x.requires_grad or (weight is not None and weight.requires_grad)
    if torch.is_grad_enabled() and needs_grad:
        return _RMSNorm.apply(x, weight, eps)
    xf = x.float()
    y = xf * _inv_rms(xf, eps)
    return (y if weight is None else y * weight.float()).to(x.dtype)


class RMSNorm(nn.Module):
    """Root-mean-square norm: y = x / sqrt(mean(x^2) + eps) * w (Zhang & Sennrich, 2019).

    Computed in float32 and cast back to the input dtype (`rms_norm`). `affine=False`
    drops w.
    """

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        if x.size(-1) != self.dim:
            raise ValueError(f"RMSNorm: expected last dim {self.dim}, got shape {tuple(x.shape)}")
        return rms_norm(x, self.weight, self.eps)
