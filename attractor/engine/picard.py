"""Damped fixed-point (Picard) iteration: y_{k+1} = (1 - a) y_k + a f(y_k)
(docs/method.md section 2.2)."""

from __future__ import annotations

from torch import Tensor

from attractor.engine.solver_config import SolverConfig, sample_norm


class PicardStep:
    """y_{k+1} = (1 - a) y_k + a f(y_k), a = ``cfg.mixing`` (a = 1: plain iteration)."""

    def __init__(self, y0: Tensor, cfg: SolverConfig) -> None:
        self.a = cfg.mixing

    def residual(self, y: Tensor, fy: Tensor) -> tuple[Tensor, Tensor]:
        """g = f(y) - y and |g| per sample (Anderson computes both inside its history)."""
        g = fy - y
        return g, sample_norm(g)

    def __call__(self, y: Tensor, fy: Tensor, g: Tensor) -> Tensor:
        return fy if self.a == 1.0 else y.add(g, alpha=self.a)
