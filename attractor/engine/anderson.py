"""Type-II Anderson acceleration (Walker & Ni 2011), the attractor's default solver
(docs/method.md section 2.2)."""

from __future__ import annotations

import torch
from torch import Tensor

from attractor.engine.solver_config import SolverConfig


class AndersonStep:
    """Type-II Anderson acceleration (Walker & Ni 2011; DEQ, Bai et al. 2019).

    With residuals g_i = f(y_i) - y_i of the last m iterates, solve
        alpha = argmin |sum_i alpha_i g_i|^2 + lam |alpha|^2   s.t.  sum_i alpha_i = 1,
    i.e. alpha = H^-1 1 / (1^T H^-1 1) with H = G G^T + lam s I (s the largest |g_i|^2,
    or 1 with ``absolute_regularization``), then
        y_{k+1} = beta sum_i alpha_i f(y_i) + (1 - beta) sum_i alpha_i y_i
                = sum_i alpha_i f(y_i) - (1 - beta) sum_i alpha_i g_i.
    The history is a ring buffer: slot k mod m holds iterate k, and only the filled slots
    enter H (the paper's puzzle code reads the empty ones too). The Gram matrix G G^T is
    updated one row per step (m dot products instead of m^2) and the m x m system is solved
    in float64 whatever the input dtype. A sample whose system is singular or not finite
    takes the plain step y_{k+1} = f(y_k) instead.
    """

    def __init__(self, y0: Tensor, cfg: SolverConfig) -> None:
        b, m = y0.shape[0], cfg.history
        flat = y0.reshape(b, -1)
        self.m, self.beta, self.lam = m, cfg.mixing, cfg.regularization
        self.absolute = cfg.absolute_regularization
        self.F = flat.new_empty(b, m, flat.shape[1])  # images f(y_i)
        self.G = flat.new_empty(b, m, flat.shape[1])  # residuals g_i
        self.gram = torch.zeros(b, m, m, dtype=torch.float64, device=y0.device)
        self.eye = torch.eye(m, dtype=torch.float64, device=y0.device)  # also the plain steps
        self.ones = torch.ones(b, m, 1, dtype=torch.float64, device=y0.device)
        self.k = 0
        self.wide = flat.dtype in (torch.float32, torch.float64)

    def residual(self, y: Tensor, fy: Tensor) -> tuple[Tensor, Tensor]:
        """Store f(y) and g = f(y) - y in the next ring-buffer slot and add g's row to the
        Gram matrix; return g and |g| (read off the Gram diagonal)."""
        b, slot, n = y.shape[0], self.k % self.m, min(self.k + 1, self.m)
        self.F[:, slot].copy_(fy.reshape(b, -1))
        g = torch.sub(self.F[:, slot], y.reshape(b, -1), out=self.G[:, slot])
        row = self._dots(n, g)
        self.gram[:, slot, :n] = row
        self.gram[:, :n, slot] = row
        return g.view_as(y), row[:, slot].sqrt()

    def _dots(self, n: int, g: Tensor) -> Tensor:
        """<g_i, g> for the n filled slots, in float32 or wider: [B, n] float64."""
        G = self.G[:, :n]
        if not self.wide:
            G, g = G.float(), g.float()
        if G.device.type == "cpu" and G.shape[0] <= 64:  # a few long rows: bmm is slow here
            return torch.stack([torch.mv(G[i], g[i]) for i in range(G.shape[0])]).double()
        return torch.bmm(G, g.unsqueeze(-1)).squeeze(-1).double()

    def __call__(self, y: Tensor, fy: Tensor, g: Tensor) -> Tensor:
        n = min(self.k + 1, self.m)
        self.k += 1
        if n == 1:
            return fy
        alpha = self._weights(n, newest=(self.k - 1) % self.m).unsqueeze(1)  # [B, 1, n]
        mixed = torch.bmm(alpha, self.F[:, :n])
        if self.beta != 1.0:
            mixed = mixed.sub_(torch.bmm(alpha, self.G[:, :n]), alpha=1.0 - self.beta)
        return mixed.view_as(y)

    def _weights(self, n: int, newest: int) -> Tensor:
        """alpha = H^-1 1 / (1^T H^-1 1), [B, n]; the plain step (alpha = e_newest) for a
        sample whose regularised system is singular or gives a non-finite alpha."""
        H = self.gram[:, :n, :n]
        scale = 1.0 if self.absolute else H.diagonal(dim1=1, dim2=2).amax(dim=1)[:, None, None]
        H = H + self.lam * scale * self.eye[:n, :n]
        a, info = torch.linalg.solve_ex(H, self.ones[:, :n])
        alpha = a.squeeze(-1)
        alpha = alpha / alpha.sum(dim=1, keepdim=True)
        ok = (info == 0) & torch.isfinite(alpha).all(dim=1)
        return torch.where(ok[:, None], alpha, self.eye[newest, :n]).to(self.F.dtype)
