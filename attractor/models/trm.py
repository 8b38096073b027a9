"""Tiny Recursive Model (Wang et al. 2025, arXiv 2510.04871), the reasoner's baseline.

One supervision step runs H cycles of

    z <- net(z, y + x)   (n times),   y <- net(y, z),

the first H - 1 without gradient and the last with full backpropagation through its n + 1
applications of net (`attractor.models.reasoner.RecursiveNet`). The carried (y, z) are
detached between supervision steps; TRM's fixed random initial states start step 0.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from attractor.models.grid import GridConfig, GridOutput
from attractor.models.reasoner import LatentPairModel


@dataclass
class TRMConfig(GridConfig):
    n_layers: int = 2  # blocks in net
    cycles: int = 3  # H
    inner: int = 6  # n


class TRM(LatentPairModel):
    kind = "trm"

    def __init__(self, config: TRMConfig):
        if config.cycles < 1 or config.inner < 1:
            raise ValueError("trm: cycles (H) and inner (n) must be at least 1")
        super().__init__(config, config.n_layers)

    def forward(
        self, inputs: Tensor, carry: Tensor | None = None, steps: int | None = None
    ) -> GridOutput:
        """One supervision step; `steps` overrides the number of cycles H (0 decodes carry)."""
        c = self.config
        cycles = c.cycles if steps is None else steps
        if cycles < 0:
            raise ValueError(f"trm: steps must be >= 0, got {steps}")
        x = self.embed(inputs)  # (B, S, C)
        start = self.initial_carry(inputs.shape[0]) if carry is None else carry
        y, z = start.to(x.dtype).unbind(dim=1)
        for cycle in range(cycles):
            last = cycle == cycles - 1
            with contextlib.nullcontext() if last else torch.no_grad():
                for _ in range(c.inner):
                    z = self.net(z, y + x)
                y = self.net(y, z)
        logits, halt = self.readout(y)
        return GridOutput(logits, halt, torch.stack((y, z), dim=1).detach())
