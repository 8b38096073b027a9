"""Tiny Recursive Model (Jolicoeur-Martineau 2025, arXiv 2510.04871), the reasoner's baseline.

One supervision step runs H cycles of

    z <- net(z, y + x)   (n times),   y <- net(y, z),

the first H - 1 without gradient and the last with full backpropagation through its n + 1
applications of net (`attractor.models.grid_latents.RecursiveNet`). The carried (y, z) are
detached between supervision steps; TRM's fixed random initial states start step 0.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from attractor.models.grid import GridOutput
from attractor.models.grid_latents import LatentPairConfig, LatentPairModel
from attractor.models.registry import register


@dataclass
class TRMConfig(LatentPairConfig):
    """TRM: blocks in net, H cycles of n inner updates."""

    n_layers: int = 2  # blocks in net
    cycles: int = 3  # H
    inner: int = 6  # n

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cycles < 1 or self.inner < 1:
            raise ValueError(
                f"trm: cycles (H) and inner (n) must be at least 1, got {self.cycles} and "
                f"{self.inner}"
            )


@register("trm", TRMConfig)
class TRM(LatentPairModel):
    """H cycles of the recursion, the last with gradient (module docstring)."""

    depth_unit = "cycles"

    def max_depth(self) -> int:
        """T_max: the number of cycles H."""
        return self.config.cycles

    def forward(
        self, inputs: Tensor, carry: Tensor | None = None, depth: int | None = None
    ) -> GridOutput:
        """One supervision step; `depth` overrides the number of cycles H (0 decodes carry)."""
        c = self.config
        cycles = c.cycles if depth is None else depth
        if cycles < 0:
            raise ValueError(f"trm: depth must be >= 0, got {depth}")
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
        return GridOutput(logits, halt, torch.stack((y, z), dim=1).detach(), depth=cycles)

    def train_flops(self, out: GridOutput, shape: tuple[int, ...], attention: bool = True) -> float:
        """3 (F_readout + (n + 1) F_net) for the last cycle, (H - 1)(n + 1) F_net before it."""
        c = self.config
        cycle = (c.inner + 1) * self.net_flops(attention)
        graph = self.readout.flops() + (cycle if out.depth else 0.0)
        return (3.0 * graph + max(out.depth - 1, 0) * cycle) * shape[0]
