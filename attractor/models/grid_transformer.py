"""Fixed-depth bidirectional Transformer on grids: the no-recursion baseline.

logits = Readout(Blocks(x)), one pass of n pre-norm bidirectional blocks; no carried state.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from attractor.models.grid import (
    GridConfig,
    GridEmbedding,
    GridModel,
    GridOutput,
    GridReadout,
    grid_blocks,
)
from attractor.models.registry import register


@dataclass
class GridTransformerConfig(GridConfig):
    """The one-pass grid baseline: n_layers bidirectional blocks."""

    n_layers: int = 8


@register("grid_transformer", GridTransformerConfig)
class GridTransformer(GridModel):
    """logits = Readout(Blocks(x)): a fixed depth, no carried state."""

    def __init__(self, config: GridTransformerConfig):
        super().__init__()
        self.config = c = config
        self.embed = GridEmbedding(c)
        self.blocks = grid_blocks(c, c.n_layers)
        self.readout = GridReadout(c)
        self._init(c.n_layers)

    def forward(
        self, inputs: Tensor, carry: Tensor | None = None, depth: int | None = None
    ) -> GridOutput:
        """Cell and halting logits of one pass; a fixed-depth model takes no `depth`."""
        if depth is not None:
            raise ValueError("grid_transformer: a fixed-depth model has no depth to set")
        h = self.embed(inputs)
        for block in self.blocks:
            h = block(h)
        logits, halt = self.readout(h)
        return GridOutput(logits, halt)

    def train_flops(self, out: GridOutput, shape: tuple[int, ...], attention: bool = True) -> float:
        """3 (F_blocks + F_readout) per grid."""
        per_grid = self.config.n_layers * self.block_flops(attention) + self.readout.flops()
        return 3.0 * per_grid * shape[0]
