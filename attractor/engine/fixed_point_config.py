"""One dataclass for how a model finds and differentiates its fixed point.

Every model with a solve (the Attractor LM, the DEQ, the reasoner, the grid Attractor)
holds a `FixedPointConfig`: its training and evaluation solvers, the backward mode with
its settings, and the adjoint's own solver. `solver(training, depth)` is the one place
that turns "training or evaluation, at the model's own depth or at a fixed T" into a
`SolverConfig`; `solve` runs `attractor.engine.fixed_point` with these settings
(docs/method.md sections 2.2 and 2.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

from attractor.core.typed_config import validate
from attractor.engine.implicit import check_backward, default_adjoint, fixed_point
from attractor.engine.solver_config import Map, SolverConfig, SolverStats


@dataclass
class FixedPointConfig:
    """train_solver / eval_solver: the solve in training and in evaluation; backward: how
    gradients pass the fixed point (jfb | neumann | adjoint | phantom); backward_steps and
    damping: phantom's k and a; neumann_clip: c in |J^T v| <= c |v| (None: unclipped);
    adjoint_solver: the solver of u = J^T u + v."""

    train_solver: SolverConfig = field(default_factory=SolverConfig)
    eval_solver: SolverConfig = field(default_factory=SolverConfig)
    backward: Literal["jfb", "neumann", "adjoint", "phantom"] = "jfb"
    backward_steps: int = 2
    damping: float = 1.0
    neumann_clip: float | None = 1.0
    adjoint_solver: SolverConfig = field(default_factory=default_adjoint)

    def __post_init__(self) -> None:
        validate(self)
        check_backward(self.backward, self.backward_steps, self.damping, self.neumann_clip)

    def solver(self, training: bool, depth: int | None = None) -> SolverConfig:
        """The training or evaluation solver; with `depth`, exactly that many iterations."""
        base = self.train_solver if training else self.eval_solver
        return base if depth is None else base.at_depth(depth)

    def solve(
        self, f: Map, y0: Tensor, training: bool, depth: int | None = None
    ) -> tuple[Tensor, SolverStats]:
        """y* = f(y*) from y0 with `solver(training, depth)`, differentiable by `backward`."""
        return fixed_point(
            f,
            y0,
            self.solver(training, depth),
            backward=self.backward,
            backward_steps=self.backward_steps,
            damping=self.damping,
            neumann_clip=self.neumann_clip,
            adjoint=self.adjoint_solver,
        )
