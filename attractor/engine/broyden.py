"""Restarted limited-memory "good" Broyden on g(y) = f(y) - y = 0 (Broyden 1965;
docs/method.md section 2.2)."""

from __future__ import annotations

import torch
from torch import Tensor

from attractor.engine.picard import PicardStep
from attractor.engine.solver_config import SolverConfig


class BroydenStep:
    """Limited-memory "good" Broyden on g(y) = f(y) - y = 0 (Broyden 1965; DEQ).

    Keeps the inverse Jacobian estimate B = -I + sum_i u_i v_i^T and steps
    y_{k+1} = y_k - B g_k. After each step, with dy = y_{k+1} - y_k and dg = g_{k+1} - g_k,
        v = B^T dy,   u = (dy - B dg) / (v . dg)     (Sherman-Morrison).
    When the m slots are full the estimate restarts from B = -I (restarted limited-memory
    Broyden): overwriting only the oldest term leaves an inconsistent B that diverged on
    symmetric linear maps in our tests. A term whose denominator is zero or not finite is
    dropped (set to zero) for that sample.
    """

    def __init__(self, y0: Tensor, cfg: SolverConfig) -> None:
        b = y0.shape[0]
        d = y0[0].numel()
        self.m = cfg.history
        self.U = y0.new_zeros(b, self.m, d)
        self.V = y0.new_zeros(b, self.m, d)
        self.k = 0
        self.prev: tuple[Tensor, Tensor] | None = None

    residual = PicardStep.residual

    def _apply(self, x: Tensor) -> Tensor:
        """B x = -x + U^T (V x) for x [B, d]."""
        coef = torch.bmm(self.V, x.unsqueeze(-1))  # [B, m, 1]
        return torch.baddbmm(-x.unsqueeze(-1), self.U.transpose(1, 2), coef).squeeze(-1)

    def _apply_t(self, x: Tensor) -> Tensor:
        """B^T x = -x + V^T (U x) for x [B, d]."""
        coef = torch.bmm(self.U, x.unsqueeze(-1))
        return torch.baddbmm(-x.unsqueeze(-1), self.V.transpose(1, 2), coef).squeeze(-1)

    def __call__(self, y: Tensor, fy: Tensor, g: Tensor) -> Tensor:
        b = y.shape[0]
        yf, gf = y.reshape(b, -1), g.reshape(b, -1)
        if self.prev is not None:
            if self.k == self.m:
                self.U.zero_()
                self.V.zero_()
                self.k = 0
            dy, dg = yf - self.prev[0], gf - self.prev[1]
            v = self._apply_t(dy)
            denom = (v * dg).sum(dim=1, keepdim=True)
            u = (dy - self._apply(dg)) / denom
            ok = torch.isfinite(u).all(dim=1, keepdim=True) & (denom.abs() > 0)
            self.U[:, self.k] = torch.where(ok, u, 0.0)
            self.V[:, self.k] = torch.where(ok, v, 0.0)
            self.k += 1
        self.prev = (yf, gf)
        return (yf - self._apply(gf)).view_as(y)
