"""The paper's reasoner scheme: TRM's cycles with the z-recursion solved to its fixed point.

The paper's puzzle code (github jacobfa/Attractor, experiments/attractor_puzzles/trm/
trm_deq.py, `TRMDEQ_Inner.forward` and `_InnerDEQ`) keeps TRM's outer loop (Jolicoeur-
Martineau 2025, arXiv 2510.04871) and replaces its n inner z-updates by a solve. One
supervision step runs H cycles of

    z <- z*,   z* = net(z*, y + x)   solved with y held fixed (Anderson),
    z <- net(z, y + x)   k times, from the solver's last pre-image (phantom steps),
    y <- net(y, z),

the first H - 1 cycles without gradient, so the gradient passes through the last cycle's
k + 1 applications of net (H = 3, k = 2: three). Cells and the halting logit are read from
y, as in TRM; (y, z) is carried, detached, to the next supervision step. The k steps run
in evaluation too (the reference does the same), so training and evaluation decode the
same state. Our joint solve of (y, z) is `attractor.models.reasoner`.

The reference's solve: Anderson with m = 5, stopped once the batch maximum of
|f(z) - z| / |f(z)| is below 1e-3, after 4 to 8 evaluations of f, returning its last
iterate, the pre-image of its last evaluation (our `relative_to="image"`,
`return_last=True`; it has no noise-floor rule: `stall_patience=0`). Our Anderson mixes
only the history slots it has filled; the reference's shifts its buffer before it is full,
so empty (zero) slots enter its mixing (docs/method.md sections 2.2 and 5.1).

Presets: `reasoner-27m` and `reasoner-7m` (the paper's network, `presets.PAPER_GRID`), and
`reasoner-cpu`, the scheme on the small network of `reasoner-joint-cpu`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from attractor.engine import FixedPointConfig, SolverConfig, SolverStats
from attractor.models.grid import GridOutput
from attractor.models.grid_latents import LatentPairConfig, LatentPairModel
from attractor.models.registry import register


def nested_solver(tol: float = 1e-3, max_iter: int = 8, min_iter: int = 4) -> SolverConfig:
    """The reference's stopping rule on our Anderson (module docstring), history 5."""
    return SolverConfig(
        "anderson",
        tol=tol,
        relative_to="image",
        max_iter=max_iter,
        min_iter=min_iter,
        history=5,
        return_last=True,
        stall_patience=0,
    )


def nested_fixed_point() -> FixedPointConfig:
    """`nested_solver` in training and evaluation; k = 2 undamped phantom steps."""
    solver = nested_solver()
    return FixedPointConfig(
        train_solver=solver, eval_solver=solver, backward="phantom", backward_steps=2
    )


@dataclass
class NestedReasonerConfig(LatentPairConfig):
    """The paper's scheme: H cycles, each a solve for z (y fixed), k phantom z-steps
    (fixed_point.backward_steps) and one y-update."""

    cycles: int = 3  # H
    fixed_point: FixedPointConfig = field(default_factory=nested_fixed_point)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cycles < 1:
            raise ValueError(f"reasoner_nested: cycles (H) must be at least 1, got {self.cycles}")
        if self.fixed_point.backward != "phantom":
            raise ValueError(
                "reasoner_nested: the scheme backpropagates through k z-steps; set "
                f"fixed_point.backward to phantom (k = backward_steps), got "
                f"{self.fixed_point.backward!r}"
            )


def merge_solves(solves: list[SolverStats]) -> SolverStats:
    """One record of a supervision step's H solves: iterations (and each sample's) summed,
    traces joined, divergence and stalls of any solve; residual and convergence of the
    last solve, whose z the step decodes through y."""
    last = solves[-1]
    return SolverStats(
        iters=sum(s.iters for s in solves),
        residual=last.residual,
        converged=last.converged,
        diverged=torch.stack([s.diverged for s in solves]).any(dim=0),
        trace=[t for s in solves for t in s.trace],
        sample_iters=torch.stack([s.sample_iters for s in solves]).sum(dim=0),
        stalled=torch.stack([s.stalled for s in solves]).any(dim=0),
    )


@register("reasoner_nested", NestedReasonerConfig)
class NestedReasoner(LatentPairModel):
    """H cycles of (solve z, k phantom z-steps, update y), the last with gradient."""

    depth_unit = "solver iterations"
    config: NestedReasonerConfig

    def max_depth(self) -> int:
        """T_max: the evaluation solver's max_iter (of each of the H solves)."""
        return self.config.fixed_point.eval_solver.max_iter

    def forward(
        self, inputs: Tensor, carry: Tensor | None = None, depth: int | None = None
    ) -> GridOutput:
        """One supervision step from `carry` (step 0 when None); `depth` cuts each of the H
        solves to exactly that many iterations (0 decodes the carried state). `out.solver`
        merges the H solves (`merge_solves`); `out.depth` is the most iterations one ran."""
        c = self.config
        x = self.embed(inputs)  # (B, S, C)
        start = self.initial_carry(inputs.shape[0]) if carry is None else carry
        y, z = start.to(x.dtype).unbind(dim=1)
        if depth == 0:
            logits, halt = self.readout(y)
            return GridOutput(logits, halt, start.detach(), None, 0)
        solves = []
        for cycle in range(c.cycles):
            last = cycle == c.cycles - 1
            with contextlib.nullcontext() if last else torch.no_grad():
                context = y + x  # y is held fixed during the solve

                def f(z: Tensor, active: Tensor | None = None, context: Tensor = context) -> Tensor:
                    return self.net(z, context)

                z, stats = c.fixed_point.solve(f, z, self.training, depth)
                y = self.net(y, z)
            solves.append(stats)
        logits, halt = self.readout(y)
        carried = torch.stack((y, z), dim=1).detach()
        return GridOutput(logits, halt, carried, merge_solves(solves), max(s.iters for s in solves))

    def train_flops(self, out: GridOutput, shape: tuple[int, ...], attention: bool = True) -> float:
        """3 F_readout, the H solves' iterations (F_net each, no graph), the H - 1 cycles
        without gradient (their k phantom steps, k - 1 beyond the solve's last image when
        undamped, and the y-update), and the last cycle's k + 1 applications with backward
        (3 F_net each)."""
        c, fp = self.config, self.config.fixed_point
        f = self.net_flops(attention)
        per_grid = 3.0 * self.readout.flops()
        if out.solver is not None:
            k = fp.backward_steps
            plain = k - 1 if fp.damping == 1.0 else k  # `attractor.engine.fixed_point`
            per_grid += out.solver.iters * f + (c.cycles - 1) * (plain + 1) * f
            per_grid += 3.0 * (k + 1) * f
        return per_grid * shape[0]
