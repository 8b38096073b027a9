"""The backbone-plus-head Attractor model of section 2.1 run bidirectionally on grids.

y0 = Backbone(x) with bidirectional pre-norm blocks; the gated attractor head defines
f(y; y0) = y0 + D(y + y0) (`attractor.models.attractor.AttractorHead`, causal=False), and
the solver finds y* = f(y*; y0) for each whole grid (one sample per puzzle, since every
cell sees every other). Cells and the halting logit are read from y*. No carried state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from attractor.implicit import BACKWARDS, fixed_point
from attractor.models.attractor import AttractorHead
from attractor.models.grid import (
    GridConfig,
    GridEmbedding,
    GridModel,
    GridOutput,
    GridReadout,
    grid_blocks,
    mlp_hidden,
)
from attractor.solvers import SolverConfig, solver_for


def _grid_solver() -> SolverConfig:
    return SolverConfig("anderson", tol=1e-3, max_iter=16, min_iter=2)


@dataclass
class GridAttractorConfig(GridConfig):
    n_backbone: int = 4
    n_head_layers: int = 4
    gate_init: float = 0.75
    gate_max: float = 1.0
    train_solver: SolverConfig = field(default_factory=_grid_solver)
    eval_solver: SolverConfig = field(default_factory=_grid_solver)
    backward: str = "onestep"
    backward_steps: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backward not in BACKWARDS:
            raise ValueError(f"grid_attractor: unknown backward {self.backward!r}; {BACKWARDS}")


class GridAttractor(GridModel):
    kind = "grid_attractor"

    def __init__(self, config: GridAttractorConfig):
        super().__init__()
        self.config = c = config
        self.embed = GridEmbedding(c)
        self.backbone = grid_blocks(c, c.n_backbone)
        self.head = AttractorHead(
            c.dim,
            c.n_heads,
            mlp_hidden(c),
            depth=c.n_head_layers,
            causal=False,
            mlp=c.mlp,
            gate_init=c.gate_init,
            gate_max=c.gate_max,
            max_seq_len=c.max_seq_len,
        )
        self.readout = GridReadout(c)
        self._init(c.n_backbone + c.n_head_layers)

    def forward(
        self, inputs: Tensor, carry: Tensor | None = None, steps: int | None = None
    ) -> GridOutput:
        """y* from the proposal y0; `steps` cuts the solver (0 decodes y0 itself)."""
        c = self.config
        y0 = self.embed(inputs)
        for block in self.backbone:
            y0 = block(y0)
        y, stats = y0, None
        if steps != 0:
            y, stats = fixed_point(
                lambda y, active=None: self.head(y, y0),
                y0,
                solver_for(c.train_solver, c.eval_solver, self.training, steps),
                backward=c.backward,
                backward_steps=c.backward_steps,
            )
        logits, halt = self.readout(y)
        return GridOutput(logits, halt, None, stats)
