"""The backbone-plus-head Attractor model of section 2.1 run bidirectionally on grids.

y0 = Backbone(x) with bidirectional pre-norm blocks; the gated attractor head defines
f(y; y0) = y0 + D(y + y0) (`attractor.nn.AttractorHead`, causal=False), and
the solver finds y* = f(y*; y0) for each whole grid (one sample per puzzle, since every
cell sees every other). Cells and the halting logit are read from y*. No carried state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from attractor.engine import FixedPointConfig, SolverConfig
from attractor.models.flops import implicit_flops
from attractor.models.grid import (
    GridConfig,
    GridEmbedding,
    GridModel,
    GridOutput,
    GridReadout,
    grid_blocks,
)
from attractor.models.registry import register
from attractor.nn import AttractorHead


def grid_fixed_point() -> FixedPointConfig:
    """Anderson, tol 1e-3, 2-16 iterations; Jacobian-free backward."""
    solver = SolverConfig("anderson", tol=1e-3, max_iter=16, min_iter=2)
    return FixedPointConfig(train_solver=solver, eval_solver=solver)


@dataclass
class GridAttractorConfig(GridConfig):
    """The grid Attractor: backbone and head block counts, gates, the solve."""

    n_backbone: int = 4
    n_head_layers: int = 4
    gate_init: float = 0.75
    gate_max: float = 1.0
    fixed_point: FixedPointConfig = field(default_factory=grid_fixed_point)


@register("grid_attractor", GridAttractorConfig)
class GridAttractor(GridModel):
    """Bidirectional backbone proposal y0, attractor head solved per grid (module docstring)."""

    depth_unit = "solver iterations"

    def __init__(self, config: GridAttractorConfig):
        super().__init__()
        self.config = c = config
        self.embed = GridEmbedding(c)
        self.backbone = grid_blocks(c, c.n_backbone)
        self.head = AttractorHead(
            c.dim,
            c.n_heads,
            c.mlp_hidden(),
            depth=c.n_head_layers,
            causal=False,
            mlp=c.mlp,
            gate_init=c.gate_init,
            gate_max=c.gate_max,
            max_seq_len=c.max_seq_len,
            style=c.block_style(),
        )
        self.readout = GridReadout(c)
        self._init(c.n_backbone + c.n_head_layers)

    def max_depth(self) -> int:
        """T_max: the evaluation solver's max_iter."""
        return self.config.fixed_point.eval_solver.max_iter

    def forward(
        self, inputs: Tensor, carry: Tensor | None = None, depth: int | None = None
    ) -> GridOutput:
        """y* from the proposal y0; `depth` cuts the solver (0 decodes y0 itself)."""
        y0 = self.embed(inputs)
        for block in self.backbone:
            y0 = block(y0)
        y, stats = y0, None
        if depth != 0:
            y, stats = self.config.fixed_point.solve(
                lambda y, active=None: self.head(y, y0), y0, self.training, depth
            )
        logits, halt = self.readout(y)
        return GridOutput(logits, halt, None, stats, 0 if stats is None else stats.iters)

    def train_flops(self, out: GridOutput, shape: tuple[int, ...], attention: bool = True) -> float:
        """3 (F_backbone + F_readout) + the head's solve and backward (`implicit_flops`)."""
        c = self.config
        block = self.block_flops(attention)
        head = c.n_head_layers * block
        per_grid = 3.0 * (c.n_backbone * block + self.readout.flops())
        if out.solver is not None:
            per_grid += implicit_flops(c.fixed_point, out.solver, out.solver.iters * head, head)
        return per_grid * shape[0]
