"""Differentiating through a fixed point without storing the solver's iterations.

At y* = f(y*), with v = dL/dy* and J = df/dy at y*, the implicit function theorem gives
    dL/dtheta = u^T df/dtheta,   u = (I - J^T)^-1 v
for every tensor theta that f closes over (DEQ, Bai et al. 2019). The forward solve runs
without autograd; then one application z = f(y_k) is recorded with autograd at the solver's
pre-image y_k (the iterate whose image is the returned y*, so z equals y* exactly).
The value never depends on whether gradients are on: what training decodes and carries is
what evaluation does. Gradients reach parameters through the ordinary graph (and through
DDP's hooks). A hook on z swaps the incoming v for an approximation of u:

- ``jfb``      u ~ v                         (Jacobian-free backprop, Fung et al. 2022)
- ``neumann``  u ~ v + clip(J^T v)           (two Neumann terms, J^T v optionally clipped
               per sample; without clip this is what the paper's code calls "onestep")
- ``adjoint``  u = J^T u + v solved by Anderson or Picard (exact up to its tolerance)
- ``phantom``  k damped steps y <- (1-a) y + a f(y) from y_k, backpropagated by autograd
               (phantom gradients, Geng et al. 2021). The value is that of the k steps
               (y* itself when k = 1 and a = 1): a loss on it gets the exact gradient of
               the computation it sees, even when the solver stopped short of y*. Without
               gradients the same k steps run (torchdeq returns y* there instead, so its
               training sees up to k - 1 more steps than its evaluation; we do not).

Memory holds one application of f (k for phantom), whatever the number of solver steps.
The hooks count the vector-Jacobian products they run in ``stats.backward_iters``, so that
a step's FLOPs can be counted from what it did (docs/method.md sections 2.3 and 3).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from attractor.engine.solve import solve, solve_with_preimage
from attractor.engine.solver_config import Map, SolverConfig, SolverStats

BACKWARDS = ("jfb", "neumann", "adjoint", "phantom")


def fixed_point(
    f: Map,
    y0: Tensor,
    cfg: SolverConfig | None = None,
    backward: str = "jfb",
    backward_steps: int = 2,
    damping: float = 1.0,
    neumann_clip: float | None = 1.0,
    adjoint: SolverConfig | None = None,
) -> tuple[Tensor, SolverStats]:
    """Solve y* = f(y*) from y0 and return y* with a gradient chosen by ``backward``.

    ``backward_steps`` and ``damping`` configure ``phantom`` (k and a); ``neumann_clip``
    is c in |J^T v| <= c |v| (None: no clip); ``adjoint`` is the solver for u = J^T u + v (default:
    Anderson, tol 1e-6, 64 iterations). Under ``torch.no_grad()`` only the solve runs (and
    phantom's k steps, whose value the result is).
    The fixed point does not depend on where the solver starts, so y0 receives a zero
    gradient through the start; it receives a real one when f closes over it. With zero
    iterations (``cfg.max_iter = 0``, a depth of 0) the result is y0 itself, with and
    without gradients.
    """
    check_backward(backward, backward_steps, damping, neumann_clip)
    y_star, y_pre, stats = solve_with_preimage(f, y0, cfg)
    if stats.iters == 0:  # no f-evaluation (max_iter = 0, depth 0): the result is y0 itself
        return y0, stats
    if not torch.is_grad_enabled():
        if backward == "phantom":  # the value of the k steps, as with gradients
            return _phantom_value(f, y_star, y_pre, backward_steps, damping), stats
        return y_star, stats
    y_pre = y_pre.detach()  # y* = f(y_pre): recording f(y_pre) reproduces y* exactly
    if backward == "phantom":
        z = _phantom(f, y_pre, backward_steps, damping)
    else:
        z = f(y_pre).to(y0.dtype)
        if z.requires_grad and backward == "neumann":
            z.register_hook(_NeumannHook(f, y_pre, neumann_clip, stats))
        elif z.requires_grad and backward == "adjoint":
            z.register_hook(_AdjointHook(f, y_pre, adjoint or default_adjoint(), stats))
    if y0.requires_grad:
        z = z + 0.0 * y0  # d y*/d y0 = 0: a zero gradient, so y0.grad is a tensor, not None
    return z, stats


def check_backward(backward: str, steps: int, damping: float, clip: float | None) -> None:
    """Raise a one-line ValueError, ``key: problem``, for the first backward setting that is
    out of range (the typed config loader's message style)."""
    if backward not in BACKWARDS:
        raise ValueError(f"backward: {backward!r} is not one of {', '.join(map(repr, BACKWARDS))}")
    if steps < 1:
        raise ValueError(f"backward_steps: must be >= 1 (phantom's k steps), got {steps}")
    if not 0.0 < damping <= 1.0:
        raise ValueError(f"damping: must lie in (0, 1] (phantom's step size a), got {damping}")
    if clip is not None and not clip >= 0.0:
        raise ValueError(f"neumann_clip: must be >= 0, or None for no clip, got {clip}")


def _phantom(f: Map, y: Tensor, steps: int, a: float) -> Tensor:
    """k damped steps y <- (1 - a) y + a f(y) from the solver's last pre-image (so k = 1,
    undamped, is jfb), recorded by autograd."""
    for _ in range(steps):
        fy = f(y).to(y.dtype)
        y = fy if a == 1.0 else torch.lerp(y, fy, a)
    return y


def _phantom_value(f: Map, y_star: Tensor, y_pre: Tensor, steps: int, a: float) -> Tensor:
    """`_phantom`'s value without a graph; undamped, its first step is y* = f(y_k) itself,
    which the solver has already computed."""
    if a == 1.0:
        return _phantom(f, y_star, steps - 1, a)
    return _phantom(f, y_pre, steps, a)


def default_adjoint() -> SolverConfig:
    """The adjoint's own solver: Anderson, tol 1e-6, at most 64 iterations."""
    return SolverConfig(method="anderson", tol=1e-6, max_iter=64)


def _jacobian_transpose(f: Map, y: Tensor) -> Callable[[Tensor], Tensor]:
    """v -> J^T v at y, through one application of f recorded here (autograd on, also when
    called inside a backward pass) and reused by every call."""
    with torch.enable_grad():
        y_leaf = y.detach().requires_grad_()
        z = f(y_leaf)

    def vjp(v: Tensor) -> Tensor:
        (jtv,) = torch.autograd.grad(z, y_leaf, v.to(z.dtype), retain_graph=True)
        return jtv.to(v.dtype)

    return vjp


class _NeumannHook:
    """A hook on z: v -> u = v + J^T v, with J^T v scaled per sample so that
    |J^T v| <= c |v| (no scaling when c is None).

    The hook holds f and y_k, never z: z's graph holds the hook, so a hook holding z
    would be a reference cycle that keeps every step's graph alive until the cyclic
    collector runs (gigabytes over a training run). J^T v goes through one more
    application of f, recorded when the hook fires.
    """

    def __init__(self, f: Map, y: Tensor, clip: float | None, stats: SolverStats) -> None:
        self.f, self.y, self.clip, self.stats = f, y, clip, stats

    def __call__(self, v: Tensor | None) -> Tensor | None:
        if v is None:  # an undefined gradient stays undefined
            return None
        jtv = _jacobian_transpose(self.f, self.y)(v)
        self.stats.backward_iters = 1
        if self.clip is None:
            return v + jtv
        b = v.shape[0]
        vn = torch.linalg.vector_norm(v.reshape(b, -1), dim=1)
        jn = torch.linalg.vector_norm(jtv.reshape(b, -1), dim=1)
        scale = (self.clip * vn / jn.clamp_min(1e-30)).clamp(max=1.0)
        return v + jtv * scale.view(-1, *([1] * (v.dim() - 1)))


class _AdjointHook:
    """A hook on z: v -> u = (I - J^T)^-1 v, found as the fixed point of u -> J^T u + v.
    Like `_NeumannHook`, it holds f and y_k, not z."""

    def __init__(self, f: Map, y: Tensor, cfg: SolverConfig, stats: SolverStats) -> None:
        self.f, self.y, self.cfg, self.stats = f, y, cfg, stats

    def __call__(self, v: Tensor | None) -> Tensor | None:
        if v is None:
            return None
        vjp = _jacobian_transpose(self.f, self.y)
        # `active` is passed when the adjoint solver has freeze_converged; frozen rows' images
        # are ignored, so every row is computed
        u, adjoint_stats = solve(lambda u, active=None: vjp(u) + v, v, self.cfg)
        self.stats.backward_iters = adjoint_stats.iters
        return u


def jacobian_penalty(f: Map, y: Tensor, samples: int = 1) -> Tensor:
    """Differentiable Hutchinson estimate of |J|_F^2 / d: mean over e ~ N(0, I) of |J^T e|^2 / d.

    J = df/dy at y, d = elements per sample; averaged over the batch (Bai et al. 2021,
    "Stabilizing Equilibrium Models by Jacobian Regularization"). y is detached first, as
    in that paper: the penalty is differentiable with respect to what f closes over.
    """
    if samples < 1:
        raise ValueError(f"jacobian_penalty: samples must be at least 1, got {samples}")
    y = y.detach().requires_grad_()
    z = f(y)
    total = z.new_zeros(())
    for _ in range(samples):
        e = torch.randn_like(z)
        (jte,) = torch.autograd.grad(z, y, e, create_graph=True)
        total = total + jte.pow(2).sum()
    return total / (samples * y.numel())


def spectral_radius(f: Map, y: Tensor, iters: int = 20) -> float:
    """Power-iteration estimate of the spectral radius of J = df/dy at y (max over the batch).

    Iterates w <- J^T w / |J^T w| per sample (J^T has the spectrum of J) and returns the
    largest per-sample |J^T w| of the last step. No autograd graph survives the call.
    """
    with torch.enable_grad():
        vjp = _jacobian_transpose(f, y)
        b = y.shape[0]
        w = torch.randn_like(y)
        growth = torch.zeros(b, device=y.device)
        for _ in range(max(iters, 1)):
            w = w / torch.linalg.vector_norm(w.reshape(b, -1), dim=1).view(b, *[1] * (y.dim() - 1))
            w = vjp(w).detach()
            growth = torch.linalg.vector_norm(w.reshape(b, -1), dim=1)
    return float(growth.max())
