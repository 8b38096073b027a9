"""What the recursive grid models (the reasoner, its nested form and TRM) share: one small
net applied again and again, the embedding and readout, and the two latents (y, z)
carried between supervision steps (docs/method.md section 2.4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attractor.models.grid import (
    GridConfig,
    GridEmbedding,
    GridModel,
    GridReadout,
    grid_blocks,
    trunc_normal_,
)
from attractor.nn import PostNormBlock, RMSNorm


@dataclass
class LatentPairConfig(GridConfig):
    """A grid model with a recursive net: its blocks and whether their norms have gains."""

    n_layers: int = 8  # blocks in net
    norm_gains: bool = True  # False: the blocks' RMSNorms have no weight (the paper's code)


class RecursiveNet(torch.nn.Module):
    """net(a, b) = Blocks(a + b): post-norm bidirectional blocks, shared by every call."""

    def __init__(self, c: LatentPairConfig):
        super().__init__()
        self.blocks = grid_blocks(c, c.n_layers, PostNormBlock)
        if not c.norm_gains:  # TRM's rms_norm: x / sqrt(mean(x^2) + eps), no weight
            for block in self.blocks:
                block.norm1 = RMSNorm(c.dim, c.norm_eps, affine=False)
                block.norm2 = RMSNorm(c.dim, c.norm_eps, affine=False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """net(a, b) = Blocks(a + b), (B, S, C)."""
        h = a + b
        for block in self.blocks:
            h = block(h)
        return h


class LatentPairModel(GridModel):
    """What the recursive models share: the embedding, one recursive net, the readout, and
    TRM's fixed random initial latents (y, z), carried between supervision steps. The fixed
    point does not depend on where the solver starts, so the initial latents receive no
    gradient: they are buffers, not parameters (drawn N(0, 1), truncated at +-2 with the
    "lecun" initialisation, as TRM's H_init and L_init)."""

    recurrent = True
    config: LatentPairConfig

    def __init__(self, config: LatentPairConfig):
        super().__init__()
        self.config = c = config
        self.embed = GridEmbedding(c)
        self.net = RecursiveNet(c)
        self.readout = GridReadout(c)
        self._init(c.n_layers)
        for name in ("y_init", "z_init"):
            init = torch.empty(c.dim)
            init = trunc_normal_(init, 1.0) if c.init == "lecun" else init.normal_()
            self.register_buffer(name, init)

    def initial_carry(self, batch_size: int) -> Tensor:
        """(y, z) at step 0: (B, 2, P + L, C)."""
        state = torch.stack((self.y_init, self.z_init))  # (2, C)
        return state[None, :, None].expand(batch_size, 2, self.config.max_seq_len, -1).clone()

    def net_flops(self, attention: bool = True) -> float:
        """Forward FLOPs of one application of net to a whole grid."""
        return self.config.n_layers * self.block_flops(attention)
