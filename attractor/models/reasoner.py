"""The Attractor reasoner (docs/method.md section 2.4): TRM's two latents, solved to a fixed point.

TRM (Jolicoeur-Martineau 2025, arXiv 2510.04871) refines an answer latent y and a reasoning
latent z with one small bidirectional network by a fixed unrolled schedule. The reasoner
instead solves for the fixed point of the joint update

    G(y, z) = (net(y, z'), z'),   z' = net(z, y + x),   net(a, b) = Blocks(a + b),

with Anderson acceleration, starting from the previous supervision step's (y, z) (fixed
random initial states at step 0, as in TRM), and backpropagates through k phantom steps
(Geng et al. 2021): memory holds k applications of G whatever the solver's depth.

What is decoded and carried is the same in training and in evaluation: the k phantom
steps from the solver's last pre-image (k - 1 steps past the solver's y*), run with
autograd in training and without it in evaluation (`attractor.engine.fixed_point`). We
chose that iterate over y* with the phantom gradient attached to it: the loss then sees
the very computation its gradient differentiates, and evaluation reads the state the
model was trained to decode. Cells are decoded from y, the halting logit from y at prefix
position 0.

The paper's puzzle code solves a different problem, for z alone inside TRM's cycles:
`attractor.models.reasoner_nested`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from attractor.engine import FixedPointConfig, SolverConfig
from attractor.models.flops import implicit_flops
from attractor.models.grid import GridOutput
from attractor.models.grid_latents import LatentPairConfig, LatentPairModel
from attractor.models.registry import register


def reasoner_fixed_point() -> FixedPointConfig:
    """Anderson, tol 1e-3, 4-8 iterations of G; two undamped phantom steps backward."""
    solver = SolverConfig("anderson", tol=1e-3, max_iter=8, min_iter=4)
    return FixedPointConfig(
        train_solver=solver, eval_solver=solver, backward="phantom", backward_steps=2
    )


@dataclass
class ReasonerConfig(LatentPairConfig):
    """The reasoner: blocks in net, the solve of G and its (phantom) gradient."""

    fixed_point: FixedPointConfig = field(default_factory=reasoner_fixed_point)


@register("reasoner", ReasonerConfig)
class Reasoner(LatentPairModel):
    """TRM's two latents solved to the fixed point of G (module docstring)."""

    depth_unit = "solver iterations"

    def update(self, state: Tensor, x: Tensor) -> Tensor:
        """G(y, z) of the module docstring on the stacked state (B, 2, S, C)."""
        y, z = state.unbind(dim=1)
        z = self.net(z, y + x)
        y = self.net(y, z)
        return torch.stack((y, z), dim=1)

    def max_depth(self) -> int:
        """T_max: the evaluation solver's max_iter."""
        return self.config.fixed_point.eval_solver.max_iter

    def forward(
        self, inputs: Tensor, carry: Tensor | None = None, depth: int | None = None
    ) -> GridOutput:
        """One supervision step from `carry` (step 0 when None); `depth` cuts the solver to
        exactly that many iterations of G (0 decodes the carried state). The output is the
        k phantom steps from the solver's last pre-image, with or without gradients."""
        x = self.embed(inputs)  # (B, S, C)
        start = self.initial_carry(inputs.shape[0]) if carry is None else carry
        start = start.to(x.dtype)
        stats = None
        if depth == 0:
            state = start
        else:
            state, stats = self.config.fixed_point.solve(
                lambda s, active=None: self.update(s, x), start, self.training, depth
            )
        logits, halt = self.readout(state[:, 0])
        return GridOutput(logits, halt, state.detach(), stats, 0 if stats is None else stats.iters)

    def train_flops(self, out: GridOutput, shape: tuple[int, ...], attention: bool = True) -> float:
        """3 F_readout + the solve and backward of G = two applications of net."""
        c = self.config
        g = 2 * self.net_flops(attention)
        per_grid = 3.0 * self.readout.flops()
        if out.solver is not None:
            per_grid += implicit_flops(c.fixed_point, out.solver, out.solver.iters * g, g)
        return per_grid * shape[0]
