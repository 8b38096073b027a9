"""A per-channel gate on a linear layer's output, g * (x W^T + b), that saves no output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _GatedLinear(torch.autograd.Function):
    """out = g * (x W^T + b) as one autograd node that saves x, W, b and g.

    Autograd through `g * F.linear(x, W, b)` also keeps the branch x W^T + b, for dL/dg.
    Here dL/dg comes from S = (dL/dout)^T x, the gradient of W before the gate:
    dL/dW = g S and dL/dg = rowsum(S * W) + b * colsum(dL/dout), exact identities, so the
    backward is twice differentiable as written. Under autocast the products run in the
    dtype the forward's linear ran in.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, gate: Tensor) -> Tensor:
        y = F.linear(x, weight, bias)
        ctx.save_for_backward(x, weight, bias, gate)
        ctx.dtype = y.dtype
        return gate * y

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, bias, gate = ctx.saved_tensors
        need_x, need_w, need_b, need_g = ctx.needs_input_grad
        dt = ctx.dtype
        g2 = g.reshape(-1, g.size(-1))  # (N_tokens, out)
        dx = dw = db = dgate = None
        if need_x:
            gy = (g2 * gate).to(dt)
            dx = gy.mm(weight.to(dt)).view(x.shape).to(x.dtype)
        if need_w or need_g:
            s = g2.to(dt).t().mm(x.reshape(-1, x.size(-1)).to(dt))  # (out, in)
            if need_w:
                dw = (s * gate.unsqueeze(1)).to(weight.dtype)
            if need_g:
                dgate = (s * weight).sum(1)
        if bias is not None and (need_b or need_g):
            colsum = g2.sum(0)
            if need_b:
                db = (colsum * gate).to(bias.dtype)
            if need_g:
                dgate = dgate + bias * colsum
        return dx, dw, db, None if dgate is None else dgate.to(gate.dtype)


def gated_linear(x: Tensor, weight: Tensor, bias: Tensor | None, gate: Tensor) -> Tensor:
    """g * (x W^T + b) for x (..., in), W (out, in), b and g (out,); with gradients the
    branch x W^T + b is not kept (`_GatedLinear`)."""
    if gate.shape != (weight.size(0),):
        raise ValueError(
            f"gated_linear: gate must have shape ({weight.size(0)},), got {tuple(gate.shape)}"
        )
    tensors = (x, weight, gate) if bias is None else (x, weight, bias, gate)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _GatedLinear.apply(x, weight, bias, gate)
    return gate * F.linear(x, weight, bias)
