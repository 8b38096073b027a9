"""What every root solver shares: the map type, the config, the statistics, the norm.

A solver looks for y* = f(y*) for a batch of samples (dim 0, any trailing shape). Every
method takes the same `SolverConfig` and the driver (`attractor.engine.solve`) returns the
same `SolverStats`, so swapping Anderson for Broyden is a change of one string
(docs/method.md section 2.2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor

from attractor.core.typed_config import validate

Map = Callable[[Tensor], Tensor]

METHODS = ("anderson", "picard", "broyden")


# The paper's language-model solve (github jacobfa/Attractor; tests/data/reference), with
# `solve_unit="sequence"` (one solver sample a sequence): the last image returned, no sample
# frozen before all are below tol, the residual relative to |f(y)|, Anderson's lambda 1e-4
# added as it is (as in DEQ's reference Anderson), no stall rule. With these the converged
# logits of tests/data/reference/attractor-tiny agree to 1.3e-6. The paper presets and
# imported checkpoints use it; `solve_unit="position"` with the SolverConfig defaults is
# ours, exactly causal (README, "Deliberate differences"). Used as
# `SolverConfig(..., **PAPER_LM_SOLVE)` with the model's `solve_unit="sequence"`.
PAPER_LM_SOLVE = dict(
    return_last=True, freeze_converged=False, relative_to="image", regularization=1e-4,
    absolute_regularization=True, stall_patience=0,
)  # fmt: skip


@dataclass
class SolverConfig:
    """How to find y* = f(y*).

    method: "anderson" | "picard" | "broyden".
    tol: stop when every sample's relative residual is below it, i.e. when the batch
        maximum is (with freeze_converged off, the batch iterates as one).
    relative_to: the residual's denominator: "iterate", |f(y)-y|/|y| (ours), or "image",
        |f(y)-y|/|f(y)| (the paper's puzzle code, github jacobfa/Attractor, trm_deq.py).
    max_iter / min_iter: bounds on the number of f-evaluations.
    history: memory m of Anderson and Broyden.
    mixing: Anderson's beta (1.0 = undamped); Picard's damping a in y <- (1-a) y + a f(y).
    regularization: Tikhonov lambda of Anderson's least squares, relative to its scale (the
        largest |g_i|^2 in the history) or, with absolute_regularization, added as it is (the
        paper's language-model code and DEQ's reference Anderson: lambda 1e-4).
    diverge_above: a relative residual above this (after the first step) stops the solve.
    check_every: test the stopping rule every k iterations: the solver's one host
        synchronisation (a device-to-host read) per k iterations; converged and stalled
        samples freeze at these checks.
    stall_patience: a sample whose best residual has not halved for this many iterations
        in a row, while below the noise ceiling of the precision f computes in (2 eps:
        1.6e-2 under bf16 autocast, 2.4e-7 in float32; `attractor.engine.solve`), has
        stalled at its noise floor: it counts as finished, like a converged one, and is
        reported in `SolverStats.stalled`. 0: never stall (run to tol or max_iter).
    return_last: return the last iterate instead of the lowest-residual one per sample.
    freeze_converged: a sample stops updating once it is below tol (after min_iter), so its
        result depends only on its own trajectory, not on how long the others take. f is
        then called as f(y, active), active a [B] bool mask of the samples still
        iterating; f may skip the others (their images are ignored).
    """

    method: Literal["anderson", "picard", "broyden"] = "anderson"
    tol: float = 1e-4
    relative_to: Literal["iterate", "image"] = "iterate"
    max_iter: int = 32
    min_iter: int = 0
    history: int = 5
    mixing: float = 1.0
    regularization: float = 1e-8
    absolute_regularization: bool = False
    diverge_above: float = 1e4
    check_every: int = 1
    stall_patience: int = 2
    return_last: bool = False
    freeze_converged: bool = False

    def __post_init__(self) -> None:
        validate(self)
        if self.max_iter < 0 or self.min_iter < 0 or self.min_iter > self.max_iter:
            raise ValueError(
                f"solver: need 0 <= min_iter <= max_iter, got min_iter={self.min_iter}, "
                f"max_iter={self.max_iter}"
            )
        for name in ("history", "check_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"solver: {name} must be at least 1, got {getattr(self, name)}")
        if self.stall_patience < 0:
            raise ValueError(
                f"solver: stall_patience must be >= 0 (0: never stall), got {self.stall_patience}"
            )
        if not 0.0 < self.mixing <= 1.0:
            raise ValueError(f"solver: mixing must lie in (0, 1], got {self.mixing}")
        for name in ("tol", "regularization"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"solver: {name} must be >= 0, got {getattr(self, name)}")

    def at_depth(self, depth: int) -> SolverConfig:
        """Exactly `depth` f-evaluations (tol 0, the last iterate returned): what a fixed
        inference depth T means (docs/method.md section 2.1)."""
        if depth < 0:
            raise ValueError(f"solver: depth must be >= 0, got {depth}")
        return replace(self, tol=0.0, min_iter=depth, max_iter=depth, return_last=True)


@dataclass
class SolverStats:
    """What a solve did.

    iters: f-evaluations performed. residual: per-sample relative residual of the returned
    iterate's pre-image, [B]. converged: residual < tol, [B]. diverged: the divergence guard
    fired for the sample, [B]. trace: max relative residual over the batch (the active
    samples), per iteration. sample_iters: iterations each sample was active, [B].
    stalled: the sample stopped at its noise floor (its residual stopped falling below the
    noise ceiling; `SolverConfig.stall_patience`) without reaching tol, [B]; None from code
    that does not measure it. backward_iters: vector-Jacobian products the implicit
    backward ran (neumann: 1, adjoint: its solver's iterations), set when that backward
    runs; None before, and for backwards without them (jfb, phantom).
    """

    iters: int
    residual: Tensor
    converged: Tensor
    diverged: Tensor
    trace: list[float] = field(default_factory=list)
    sample_iters: Tensor | None = None
    stalled: Tensor | None = None
    backward_iters: int | None = None

    @property
    def floor(self) -> float | None:
        """The measured noise floor: the highest residual a stalled sample stopped at (None
        when no sample stalled). Reads the device."""
        if self.stalled is None or not bool(self.stalled.any()):
            return None
        return float(self.residual[self.stalled].max())


def sample_norm(x: Tensor) -> Tensor:
    """Per-sample 2-norm over all but dim 0, in float32 or wider."""
    x = x.reshape(x.shape[0], -1)
    if x.dtype in (torch.float32, torch.float64):
        return torch.linalg.vector_norm(x, dim=1)
    return torch.linalg.vector_norm(x, dim=1, dtype=torch.float32)
