"""The one solver driver: y* = f(y*) by Anderson, Picard or Broyden (docs/method.md
section 2.2).

`solve` owns everything the methods share: evaluating f, the per-sample relative residual
``|f(y) - y| / |y|``, keeping the lowest-residual iterate, the stopping rule, the divergence
guard and the residual trace. A method (`AndersonStep`, `PicardStep`, `BroydenStep`, one a
file) only proposes the next iterate from the newest pair (y, f(y)).

All batch work stays on the device. The host synchronises once per stopping check
(every ``check_every`` iterations) and once at the end to read the trace.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attractor.engine.anderson import AndersonStep
from attractor.engine.broyden import BroydenStep
from attractor.engine.picard import PicardStep
from attractor.engine.solver_config import Map, SolverConfig, SolverStats, sample_norm

STEPS = {"anderson": AndersonStep, "picard": PicardStep, "broyden": BroydenStep}


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


def _relative(gn: Tensor, y: Tensor, cfg: SolverConfig, first: bool) -> tuple[Tensor, Tensor]:
    """Per-sample r = |g| / |y| and the divergence flag.

    |y| = 0 (a zero start) gives r = inf without counting as divergence; a non-finite |g|
    does, and so does r > ``cfg.diverge_above`` after the first step. At the first step a
    non-finite |y| means a non-finite y0: that is bad input and raises (one host sync,
    instead of a separate pass over y0).
    """
    yn = sample_norm(y).to(gn.dtype)
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
