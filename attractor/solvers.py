"""Root solvers for y* = f(y*): Anderson, Picard and limited-memory Broyden.

One driver (`solve`) owns everything the methods share: evaluating f, the per-sample
relative residual ``|f(y) - y| / |y|``, keeping the lowest-residual iterate, the stopping
rule, the divergence guard and the residual trace. A method only proposes the next
iterate from the newest pair (y, f(y)); swapping Anderson for Broyden is a change of one
string in `SolverConfig`.

All batch work stays on the device. The host synchronises once per stopping check
(every ``check_every`` iterations) and once at the end to read the trace.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

Map = Callable[[Tensor], Tensor]

METHODS = ("anderson", "picard", "broyden")


@dataclass
class SolverConfig:
    """How to find y* = f(y*).

    method: "anderson" | "picard" | "broyden".
    tol: stop when every sample's relative residual |f(y)-y|/|y| is below it.
    max_iter / min_iter: bounds on the number of f-evaluations.
    history: memory m of Anderson and Broyden.
    mixing: Anderson's beta (1.0 = undamped); Picard's damping a in y <- (1-a) y + a f(y).
    regularization: Tikhonov lambda of Anderson's least squares, relative to its scale.
    diverge_above: a relative residual above this (after the first step) stops the solve.
    check_every: test the stopping rule (one host sync) every k iterations.
    return_last: return the last iterate instead of the lowest-residual one per sample.
    freeze_converged: a sample stops updating once it is below tol (after min_iter), so its
        result depends only on its own trajectory, not on how long the others take. f is
        then called as f(y, active), active a [B] bool mask of the samples still
        iterating; f may skip the others (their images are ignored).
    """

    method: str = "anderson"
    tol: float = 1e-4
    max_iter: int = 32
    min_iter: int = 0
    history: int = 5
    mixing: float = 1.0
    regularization: float = 1e-8
    diverge_above: float = 1e4
    check_every: int = 1
    return_last: bool = False
    freeze_converged: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"solver: unknown method {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        if self.max_iter < 0 or self.min_iter < 0 or self.min_iter > self.max_iter:
            raise ValueError(
                f"solver: need 0 <= min_iter <= max_iter, got min_iter={self.min_iter}, "
                f"max_iter={self.max_iter}"
            )
        if self.history < 1 or self.check_every < 1:
            raise ValueError("solver: history and check_every must be at least 1")
        if not 0.0 < self.mixing <= 1.0:
            raise ValueError(f"solver: mixing must lie in (0, 1], got {self.mixing}")
        if self.tol < 0 or self.regularization < 0:
            raise ValueError("solver: tol and regularization must be non-negative")


def solver_for(
    train: SolverConfig, evaluate: SolverConfig, training: bool, steps: int | None = None
) -> SolverConfig:
    """A model's solve: its training or evaluation solver, or with ``steps`` exactly that many
    f-evaluations (tol 0, the last iterate returned): what "inference depth T" means."""
    base = train if training else evaluate
    if steps is None:
        return base
    if steps < 0:
        raise ValueError(f"solver: steps must be >= 0, got {steps}")
    return replace(base, tol=0.0, min_iter=steps, max_iter=steps, return_last=True)


@dataclass
class SolverStats:
    """What a solve did.

    iters: f-evaluations performed. residual: per-sample relative residual of the returned
    iterate's pre-image, [B]. converged: residual < tol, [B]. diverged: the divergence guard
    fired for the sample, [B]. trace: max relative residual over the batch (the active
    samples), per iteration. sample_iters: iterations each sample was active, [B].
    """

    iters: int
    residual: Tensor
    converged: Tensor
    diverged: Tensor
    trace: list[float] = field(default_factory=list)
    sample_iters: Tensor | None = None


# ----------------------------------------------------------------------------- methods
class PicardStep:
    """Damped fixed-point iteration: y_{k+1} = (1 - a) y_k + a f(y_k)."""

    def __init__(self, y0: Tensor, cfg: SolverConfig) -> None:
        self.a = cfg.mixing

    def residual(self, y: Tensor, fy: Tensor) -> tuple[Tensor, Tensor]:
        """g = f(y) - y and |g| per sample (Anderson computes both inside its history)."""
        g = fy - y
        return g, _norm(g)

    def __call__(self, y: Tensor, fy: Tensor, g: Tensor) -> Tensor:
        return fy if self.a == 1.0 else y.add(g, alpha=self.a)


class AndersonStep:
    """Type-II Anderson acceleration (Walker & Ni 2011; DEQ, Bai et al. 2019).

    With residuals g_i = f(y_i) - y_i of the last m iterates, solve
        alpha = argmin |sum_i alpha_i g_i|^2 + lam |alpha|^2   s.t.  sum_i alpha_i = 1,
    i.e. alpha = H^-1 1 / (1^T H^-1 1) with H = G G^T + lam I, then
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
        scale = H.diagonal(dim1=1, dim2=2).amax(dim=1)
        H = H + (self.lam * scale)[:, None, None] * self.eye[:n, :n]
        a, info = torch.linalg.solve_ex(H, self.ones[:, :n])
        alpha = a.squeeze(-1)
        alpha = alpha / alpha.sum(dim=1, keepdim=True)
        ok = (info == 0) & torch.isfinite(alpha).all(dim=1)
        return torch.where(ok[:, None], alpha, self.eye[newest, :n]).to(self.F.dtype)


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


STEPS = {"anderson": AndersonStep, "picard": PicardStep, "broyden": BroydenStep}


# ----------------------------------------------------------------------------- driver
def solve(f: Map, y0: Tensor, cfg: SolverConfig | None = None) -> tuple[Tensor, SolverStats]:
    """Find y* = f(y*) for a batch (dim 0) of any trailing shape, without autograd.

    Each iteration evaluates f once at the current iterate y_k and measures
    r_k = |f(y_k) - y_k| / |y_k| per sample. The returned tensor is f(y_k) for the k with
    the lowest r_k per sample (or the last k with ``cfg.return_last``), so with
    ``max_iter = k`` and Picard it is exactly f^k(y0). Stops when every sample has
    r < tol and ``min_iter`` is reached, at ``max_iter``, or when the divergence guard
    fires (a non-finite f(y), or r > ``diverge_above`` after the first step): the solve
    then returns the best iterate so far and marks the sample in ``stats.diverged``; it
    never raises for divergence.
    """
    image, _, stats = solve_with_preimage(f, y0, cfg)
    return image, stats


@torch.no_grad()
def solve_with_preimage(
    f: Map, y0: Tensor, cfg: SolverConfig | None = None
) -> tuple[Tensor, Tensor, SolverStats]:
    """`solve`, also returning the pre-image: the iterate y_k whose image f(y_k) is the
    result, so that a caller can record f(y_k) with autograd and get the same value."""
    cfg = cfg or SolverConfig()
    _validate_start(y0)
    b = y0.shape[0]
    wide = torch.promote_types(y0.dtype, torch.float32)
    best_r = torch.full((b,), math.inf, dtype=wide, device=y0.device)
    diverged = torch.zeros(b, dtype=torch.bool, device=y0.device)
    trace = torch.empty(cfg.max_iter, dtype=wide, device=y0.device)
    best = last = best_pre = last_pre = y = y0
    last_r = best_r
    step = STEPS[cfg.method](y0, cfg)
    no_autocast = torch.autocast(y0.device.type, enabled=False)
    active = torch.ones(b, dtype=torch.bool, device=y0.device) if cfg.freeze_converged else None
    sample_iters = torch.zeros(b, dtype=torch.long, device=y0.device)
    iters = 0
    while iters < cfg.max_iter:
        fy = f(y) if active is None else f(y, active)
        if iters == 0:
            _check_image(fy, y)
        fy = fy.to(y.dtype)
        with no_autocast:  # f runs under the caller's autocast; the solver's arithmetic never
            g, gn = step.residual(y, fy)
        r, bad = _relative(gn, y, cfg, first=iters == 0)
        if active is None:
            trace[iters] = r.max()
        else:  # frozen samples' images are ignored
            trace[iters] = torch.where(active, r, 0.0).max()
            r, bad = torch.where(active, r, math.inf), bad & active
            sample_iters += active
        iters += 1
        diverged |= bad
        improved = (r < best_r) & ~bad
        best_r = torch.where(improved, r, best_r)
        last, last_r, last_pre = fy, r, y
        stop, all_improved = False, False
        if iters % cfg.check_every == 0:
            stop, all_improved = _check(best_r, last_r, diverged, improved, iters, cfg)
        if all_improved:
            best, best_pre = fy, y
        else:
            best = torch.where(_expand(improved, fy), fy, best)
            best_pre = torch.where(_expand(improved, y), y, best_pre)
        if stop:
            break
        if iters < cfg.max_iter:
            with no_autocast:
                y = step(y, fy, g)
            if active is not None:
                active = active & ~((best_r < cfg.tol) & (iters >= cfg.min_iter))
                y = torch.where(_expand(active, y), y, best)
    if cfg.return_last:  # frozen samples keep the iterate they froze at
        keep = diverged if active is None else diverged | ~active
        best = torch.where(_expand(keep, last), best, last)
        best_pre = torch.where(_expand(keep, last), best_pre, last_pre)
        best_r = torch.where(keep, best_r, last_r)
    stats = SolverStats(
        iters=iters,
        residual=best_r,
        converged=best_r < cfg.tol,
        diverged=diverged,
        trace=trace[:iters].tolist(),
        sample_iters=sample_iters if active is not None else torch.full_like(sample_iters, iters),
    )
    return best, best_pre, stats


def _norm(x: Tensor) -> Tensor:
    """Per-sample 2-norm over all but dim 0, in float32 or wider."""
    x = x.reshape(x.shape[0], -1)
    if x.dtype in (torch.float32, torch.float64):
        return torch.linalg.vector_norm(x, dim=1)
    return torch.linalg.vector_norm(x, dim=1, dtype=torch.float32)


def _relative(gn: Tensor, y: Tensor, cfg: SolverConfig, first: bool) -> tuple[Tensor, Tensor]:
    """Per-sample r = |g| / |y| and the divergence flag.

    |y| = 0 (a zero start) gives r = inf without counting as divergence; a non-finite |g|
    does, and so does r > ``cfg.diverge_above`` after the first step. At the first step a
    non-finite |y| means a non-finite y0: that is bad input and raises (one host sync,
    instead of a separate pass over y0).
    """
    yn = _norm(y).to(gn.dtype)
    if first and not bool(torch.isfinite(yn).all()):
        raise ValueError("solver: y0 contains NaN or Inf; check what produced the starting point")
    r = gn / yn.clamp_min(torch.finfo(gn.dtype).tiny)
    bad = ~torch.isfinite(gn)
    if not first:
        bad |= r > cfg.diverge_above
    return r, bad


def _check(
    best_r: Tensor,
    last_r: Tensor,
    diverged: Tensor,
    improved: Tensor,
    iters: int,
    cfg: SolverConfig,
) -> tuple[bool, bool]:
    """The stopping rule, and whether every sample improved (then the newest image is the
    best one and no masked copy is needed). The solver's only host synchronisation."""
    stop = diverged.any()
    if iters >= cfg.min_iter:
        stop |= ((last_r if cfg.return_last else best_r) < cfg.tol).all()
    flags = torch.stack([stop, improved.all()]).tolist()
    return bool(flags[0]), bool(flags[1])


def _check_image(fy: Tensor, y: Tensor) -> None:
    if fy.shape != y.shape:
        raise ValueError(
            f"solver: f(y) has shape {tuple(fy.shape)} but y has shape {tuple(y.shape)}; "
            "f must return a tensor of the same shape as its input"
        )


def _validate_start(y0: Tensor) -> None:
    if not torch.is_floating_point(y0):
        raise ValueError(f"solver: y0 must be a floating-point tensor, got {y0.dtype}")
    if y0.dim() < 1 or y0.shape[0] == 0:
        raise ValueError(f"solver: y0 needs a non-empty batch dimension, got {tuple(y0.shape)}")


def _expand(mask: Tensor, like: Tensor) -> Tensor:
    """A [B] mask viewed to broadcast against a [B, ...] tensor."""
    return mask.view(-1, *([1] * (like.dim() - 1)))
