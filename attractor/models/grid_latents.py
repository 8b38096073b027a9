"""What the two recursive grid models (the reasoner and TRM) share: one small net applied
again and again, the embedding and readout, and the two latents (y, z) carried between
supervision steps (docs/method.md section 2.4)."""

from __future__ import annotations

import torch
from torch import Tensor

from attractor.models.grid import GridConfig, GridEmbedding, GridModel, GridReadout, grid_blocks
from attractor.nn import PostNormBlock


class RecursiveNet(torch.nn.Module):
    """net(a, b) = Blocks(a + b): post-norm bidirectional blocks, shared by every call."""

    def __init__(self, c: GridConfig, n_layers: int):
        super().__init__()
        self.blocks = grid_blocks(c, n_layers, PostNormBlock)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """net(a, b) = Blocks(a + b), (B, S, C)."""
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
