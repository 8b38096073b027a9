"""Root-mean-square normalisation, with a backward that saves only the input and 1/rms."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _wide(x: Tensor) -> Tensor:
    """x in the dtype the norm computes in: float32, or float64 for a float64 x."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _inv_rms(x: Tensor, eps: float) -> Tensor:
    """r = 1 / sqrt(mean(x^2) + eps) over the last dim, keepdim."""
    return x.pow(2).mean(-1, keepdim=True).add(eps).rsqrt()


def _forward(xf: Tensor, weight: Tensor | None, eps: float) -> tuple[Tensor, Tensor]:
    """(xf r w, r) for xf in the norm's dtype (`_wide`): `aten::_fused_rms_norm`, the op
    whose first output `F.rms_norm` itself returns (PyTorch's
    aten/src/ATen/native/layer_norm.cpp, `rms_norm_symint`), so the values are
    F.rms_norm's on every device (on CPU, its composite: pow, mean, add, rsqrt, then x r,
    then times w)."""
    w = None if weight is None else weight.to(xf.dtype)
    return torch.ops.aten._fused_rms_norm(xf, [xf.size(-1)], w, eps)


class _RMSNorm(torch.autograd.Function):
    """y = x r w with r = 1 / sqrt(mean(x^2) + eps), in float32 (float64 for float64 x),
    cast back to x's dtype.

    Saves x (in its own dtype, not a float32 copy) and r, shape (..., 1). Autograd through
    the composite `F.rms_norm` saves x, r, x r and, for a bfloat16 x, x's float32 copy.
    Backward, with g' = g w and C the last dim:

        dL/dx = r g' - (r^3 / C) x sum(g' x),    dL/dw = sum over rows of g (x r),

    x r remade from x and r. Twice differentiable (the Jacobian penalty's create_graph):
    there r is recomputed from x, so that the formula is a function of x autograd can
    differentiate; without create_graph the saved r is used.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
        y, r = _forward(_wide(x), weight, eps)
        ctx.save_for_backward(x, weight, r)
        ctx.eps = eps
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight, r = ctx.saved_tensors
        xf = _wide(x)
        gf = g.to(xf.dtype)
        if torch.is_grad_enabled():  # create_graph: r as a differentiable function of x
            r = _inv_rms(xf, ctx.eps)
        gw = gf if weight is None else gf * weight.to(xf.dtype)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dot = (gw * xf).sum(-1, keepdim=True)  # sum(g' x), (..., 1)
            dx = (gw * r - xf * (dot * r.pow(3) / x.size(-1))).to(x.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            rows = tuple(range(x.dim() - 1))
            dw = (gf * (xf * r)).sum(rows).to(weight.dtype)
        return dx, dw, None


def rms_norm(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dim, computed in float32 (in
    float64 for a float64 x) and cast back to x's dtype: the values of
    `F.rms_norm(x.float(), ...)` (`F.rms_norm(x, ...)` for float64). With gradients it
    saves x and 1/rms only (`_RMSNorm`)."""
    needs_grad = x.requires_grad or (weight is not None and weight.requires_grad)
    if torch.is_grad_enabled() and needs_grad:
        return _RMSNorm.apply(x, weight, eps)
    return _forward(_wide(x), weight, eps)[0].to(x.dtype)


class RMSNorm(nn.Module):
    """Root-mean-square norm: y = x / sqrt(mean(x^2) + eps) * w (Zhang & Sennrich, 2019).

    Computed in float32 (float64 for float64 inputs) and cast back to the input dtype
    (`rms_norm`). `affine=False` drops w.
    """

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        if x.size(-1) != self.dim:
            raise ValueError(f"RMSNorm: expected last dim {self.dim}, got shape {tuple(x.shape)}")
        return rms_norm(x, self.weight, self.eps)
