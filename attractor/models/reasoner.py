"""The Attractor reasoner (DESIGN.md section 2.3): TRM's two latents, solved to a fixed point.

TRM (Wang et al. 2025, arXiv 2510.04871) refines an answer latent y and a reasoning latent
z with one small bidirectional network by a fixed unrolled schedule. The reasoner instead
solves for the fixed point of the joint update

    G(y, z) = (net(y, z'), z'),   z' = net(z, y + x),   net(a, b) = Blocks(a + b),

with Anderson acceleration, starting from the previous supervision step's (y, z) (fixed
random initial states at step 0, as in TRM), and backpropagates through k phantom steps
(Geng et al. 2021): memory holds k applications of G whatever the solver's depth.
Cells are decoded from y*, the halting logit from y* at prefix position 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from attractor.implicit import fixed_point
from attractor.models.grid import (
    GridConfig,
    GridEmbedding,
    GridModel,
    GridOutput,
    GridReadout,
    grid_blocks,
)
from attractor.solvers import SolverConfig, solver_for


def _reasoner_solver() -> SolverConfig:
    return SolverConfig("anderson", tol=1e-3, max_iter=8, min_iter=4)


@dataclass
class ReasonerConfig(GridConfig):
    n_layers: int = 8  # blocks in net
    train_solver: SolverConfig = field(default_factory=_reasoner_solver)
    eval_solver: SolverConfig = field(default_factory=_reasoner_solver)
    backward_steps: int = 2  # phantom k
    backward_damping: float = 1.0  # phantom a


class RecursiveNet(torch.nn.Module):
    """net(a, b) = Blocks(a + b): post-norm bidirectional blocks, shared by every call."""

    def __init__(self, c: GridConfig, n_layers: int):
        super().__init__()
        self.blocks = grid_blocks(c, n_layers, post_norm=True)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        h = a + b
        for block in self.blocks:
            h = block(h)
        return h


class LatentPairModel(GridModel):
    """What the reasoner and TRM share: the embedding, one recursive net, the readout, and
    TRM's fixed random initial latents (y, z), carried between supervision steps. The fixed
    point does not depend on where the solver starts, so the initial latents receive no
    gradient: they are buffers, not parameters."""

    recurrent = True

    def __init__(self, config: GridConfig, n_layers: int):
        super().__init__()
        self.config = c = config
        self.embed = GridEmbedding(c)
        self.net = RecursiveNet(c, n_layers)
        self.readout = GridReadout(c)
        self._init(n_layers)
        self.register_buffer("y_init", torch.randn(c.dim))
        self.register_buffer("z_init", torch.randn(c.dim))

    def initial_carry(self, batch_size: int) -> Tensor:
        """(y, z) at step 0: (B, 2, P + L, C)."""
        state = torch.stack((self.y_init, self.z_init))  # (2, C)
        return state[None, :, None].expand(batch_size, 2, self.config.max_seq_len, -1).clone()


class Reasoner(LatentPairModel):
    kind = "reasoner"

    def __init__(self, config: ReasonerConfig):
        super().__init__(config, config.n_layers)

    def update(self, state: Tensor, x: Tensor) -> Tensor:
        """G(y, z) of the module docstring on the stacked state (B, 2, S, C)."""
        y, z = state.unbind(dim=1)
        z = self.net(z, y + x)
        y = self.net(y, z)
        return torch.stack((y, z), dim=1)

    def forward(
        self, inputs: Tensor, carry: Tensor | None = None, steps: int | None = None
    ) -> GridOutput:
        """One supervision step from `carry` (step 0 when None); `steps` cuts the solver to
        exactly that many iterations of G (0 decodes the carried state). With gradients the
        output is the k phantom steps from the solver's last pre-image (k - 1 past y*)."""
        c = self.config
        x = self.embed(inputs)  # (B, S, C)
        start = self.initial_carry(inputs.shape[0]) if carry is None else carry
        start = start.to(x.dtype)
        stats = None
        if steps == 0:
            state = start
        else:
            state, stats = fixed_point(
                lambda s, active=None: self.update(s, x),
                start,
                solver_for(c.train_solver, c.eval_solver, self.training, steps),
                backward="phantom",
                backward_steps=c.backward_steps,
                damping=c.backward_damping,
            )
        logits, halt = self.readout(state[:, 0])
        return GridOutput(logits, halt, state.detach(), stats)
