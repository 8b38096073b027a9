"""The one solver driver: y* = f(y*) by Anderson, Picard or Broyden (docs/method.md
section 2.2).

`solve` owns everything the methods share: evaluating f, the per-sample relative residual
``|f(y) - y| / |y|`` (or ``/ |f(y)|``, `SolverConfig.relative_to`), keeping the
lowest-residual iterate, the stopping rule, the noise-floor (stall) and divergence guards
and the residual trace. A method (`AndersonStep`,
`PicardStep`, `BroydenStep`, one a file) only proposes the next iterate from the newest pair
(y, f(y)).

Precision: the iterates, the residual and the method's history are float32 (or wider)
whatever y0's dtype; f sees y0's dtype and runs under the caller's autocast. A low-precision
f has a noise floor: its rounding keeps the residual from falling below a level near the
unit roundoff (bf16 under autocast: 1.5e-3 on attractor-cpu). A sample whose best residual
has not halved for ``stall_patience`` iterations while below `noise_ceiling` is *stalled*:
it stops there (`SolverStats.stalled`), instead of spending the rest of ``max_iter``.

Host synchronisation: all batch work stays on the device. The host reads the device once
per stopping check (every ``check_every`` iterations: the stop flags, whether every sample is
still active and the new trace entries, in one transfer), and once more at the end only when
the last iteration was not a check.
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
STALL_DECREASE = 0.5  # an iteration makes progress when it halves the sample's best residual
STALL_CEILING_EPS = 2.0  # a sample can stall only below this many eps of f's precision


def noise_ceiling(y0: Tensor) -> float:
    """The residual below which a sample may be declared stalled: 2 eps of the lowest
    precision f computes in (the autocast dtype when autocast is on for y0's device, else
    y0's dtype): 1.6e-2 for bf16, 2.0e-3 for float16, 2.4e-7 for float32."""
    dtype, device = y0.dtype, y0.device.type
    if torch.is_autocast_enabled(device):
        low = torch.get_autocast_dtype(device)
        if torch.finfo(low).eps > torch.finfo(dtype).eps:
            dtype = low
    return STALL_CEILING_EPS * torch.finfo(dtype).eps


def solve(f: Map, y0: Tensor, cfg: SolverConfig | None = None) -> tuple[Tensor, SolverStats]:
    """Find y* = f(y*) for a batch (dim 0) of any trailing shape, without autograd.

    Each iteration evaluates f once at the current iterate y_k and measures
    r_k = |f(y_k) - y_k| / |y_k| per sample. The returned tensor is f(y_k) for the k with
    the lowest r_k per sample (or the last k with ``cfg.return_last``), so with
    ``max_iter = k`` and Picard it is exactly f^k(y0). Stops when every sample has
    r < tol or has stalled at its noise floor (module docstring) and ``min_iter`` is
    reached, at ``max_iter``, or when the divergence guard fires (a non-finite f(y), or
    r > ``diverge_above`` after the first step): the solve then returns the best iterate so
    far and marks the sample in ``stats.diverged``; it never raises for divergence.
    """
    image, _, stats = solve_with_preimage(f, y0, cfg)
    return image, stats


class _Host:
    """What the host has read from the device: the trace so far and the last flags."""

    def __init__(self) -> None:
        self.trace: list[float] = []
        self.start_checked = False

    def read(self, flags: list[Tensor], trace: Tensor, start_bad: Tensor) -> list[bool]:
        """One device-to-host transfer: `flags`, the unread trace entries and (the first
        time) whether y0 was non-finite, which raises."""
        parts = [torch.stack(flags).to(trace.dtype)] if flags else []
        if not self.start_checked:
            parts.append(start_bad.to(trace.dtype).view(1))
        values = torch.cat([*parts, trace[len(self.trace) :]]).tolist()
        n = len(flags)
        if not self.start_checked:
            self.start_checked = True
            if values[n]:
                raise ValueError(
                    "solver: y0 contains NaN or Inf; check what produced the starting point"
                )
            n += 1
        self.trace += values[n:]
        return [bool(v) for v in values[: len(flags)]]


@torch.no_grad()
def solve_with_preimage(
    f: Map, y0: Tensor, cfg: SolverConfig | None = None
) -> tuple[Tensor, Tensor, SolverStats]:
    """`solve`, also returning the pre-image: the input x_k (in y0's dtype) whose image
    f(x_k) is the result, so that a caller can record f(x_k) with autograd and get the
    same value."""
    cfg = cfg or SolverConfig()
    _validate_start(y0)
    b, device = y0.shape[0], y0.device
    work = torch.promote_types(y0.dtype, torch.float32)  # iterates, residuals, history
    ceiling = noise_ceiling(y0)
    best_r = torch.full((b,), math.inf, dtype=work, device=device)
    diverged = torch.zeros(b, dtype=torch.bool, device=device)
    stalled = torch.zeros(b, dtype=torch.bool, device=device)
    since = torch.zeros(b, dtype=torch.long, device=device)  # iterations without progress
    trace = torch.empty(cfg.max_iter, dtype=work, device=device)
    y = y0.to(work)
    best = last = y
    best_pre = last_pre = y0
    last_r, start_bad = best_r, torch.zeros((), dtype=torch.bool, device=device)
    step = STEPS[cfg.method](y, cfg)
    no_autocast = torch.autocast(device.type, enabled=False)
    active = torch.ones(b, dtype=torch.bool, device=device) if cfg.freeze_converged else None
    all_active = True  # the host's view, updated at each check
    sample_iters = torch.zeros(b, dtype=torch.long, device=device)
    host = _Host()
    iters = 0
    while iters < cfg.max_iter:
        x = y.to(y0.dtype)  # what f sees (y itself when y0 is float32 or wider)
        fy = f(x) if active is None or all_active else f(x, active)
        if iters == 0:
            _check_image(fy, x)
        fy = fy.to(work)
        with no_autocast:  # f runs under the caller's autocast; the solver's arithmetic never
            g, gn = step.residual(y, fy)
        r, bad, yn_bad = _relative(gn, y, fy, cfg, first=iters == 0)
        if iters == 0:
            start_bad = yn_bad
        if active is None:
            trace[iters] = r.max()
        else:  # frozen samples' images are ignored
            trace[iters] = torch.where(active, r, 0.0).max()
            r, bad = torch.where(active, r, math.inf), bad & active
            sample_iters += active
        iters += 1
        diverged |= bad
        since = torch.where(r < STALL_DECREASE * best_r, 0, since + 1)
        improved = (r < best_r) & ~bad
        best_r = torch.where(improved, r, best_r)
        if cfg.stall_patience:
            stalled |= (since >= cfg.stall_patience) & (best_r < ceiling)
        last, last_r, last_pre = fy, r, x
        stop, all_improved = False, False
        checked = iters % cfg.check_every == 0
        if checked:
            done = ((last_r if cfg.return_last else best_r) < cfg.tol) | stalled
            if active is not None:  # a frozen sample is done (its last_r is inf)
                done |= ~active
            if active is not None and iters >= cfg.min_iter:
                active = active & ~((best_r < cfg.tol) | stalled)
            stop_t = diverged.any() | done.all() if iters >= cfg.min_iter else diverged.any()
            flags = [stop_t, improved.all()] + ([active.all()] if active is not None else [])
            read = host.read(flags, trace[:iters], start_bad)
            stop, all_improved = read[0], read[1]
            all_active = read[2] if active is not None else True
        if all_improved:
            best, best_pre = fy, x
        else:
            best = torch.where(_expand(improved, fy), fy, best)
            best_pre = torch.where(_expand(improved, x), x, best_pre)
        if stop:
            break
        if iters < cfg.max_iter:
            with no_autocast:
                y = step(y, fy, g)
            if active is not None and not all_active:
                y = torch.where(_expand(active, y), y, best)
    if iters and (len(host.trace) < iters or not host.start_checked):
        host.read([], trace[:iters], start_bad)
    if cfg.return_last:  # frozen samples keep the iterate they froze at
        keep = diverged if active is None else diverged | ~active
        best = torch.where(_expand(keep, last), best, last)
        best_pre = torch.where(_expand(keep, last), best_pre, last_pre)
        best_r = torch.where(keep, best_r, last_r)
    converged = best_r < cfg.tol
    stats = SolverStats(
        iters=iters,
        residual=best_r,
        converged=converged,
        diverged=diverged,
        trace=host.trace,
        sample_iters=sample_iters if active is not None else torch.full_like(sample_iters, iters),
        stalled=stalled & ~converged & ~diverged,
    )
    return best.to(y0.dtype), best_pre, stats


def _relative(
    gn: Tensor, y: Tensor, fy: Tensor, cfg: SolverConfig, first: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample r = |g| / |y| (or |g| / |f(y)| with relative_to="image"), the divergence
    flag, and whether any |y| is non-finite.

    A zero denominator (a zero start) gives r = inf without counting as divergence; a
    non-finite |g| does, and so does r > ``cfg.diverge_above`` after the first step. A
    non-finite |y| at the first step means a non-finite y0: bad input, raised when the host
    next reads the device (instead of a separate pass over y0 and a sync of its own).
    """
    yn = sample_norm(y).to(gn.dtype)
    ref = yn if cfg.relative_to == "iterate" else sample_norm(fy).to(gn.dtype)
    r = gn / ref.clamp_min(torch.finfo(gn.dtype).tiny)
    bad = ~torch.isfinite(gn)
    if not first:
        bad |= r > cfg.diverge_above
    return r, bad, ~torch.isfinite(yn).all()


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
