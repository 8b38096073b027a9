"""The attractor head: the weight-tied map f(y; y0) whose fixed point a model solves for
(docs/method.md section 2.1).

Its parameters form their own optimizer group ("head"): the paper trains the whole head
with AdamW at a lower learning rate.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from attractor.nn.block import GATE_CLAMP, BlockStyle, GatedBlock
from attractor.nn.kv_cache import KVCache

INJECTIONS = ("additive", "concat", "initial")
Injection = Literal["additive", "concat", "initial"]


class AttractorHead(nn.Module):
    """The attractor map f(y; y0) over a stack H of K gated blocks (the same at every
    iteration). Injection (paper Table 4):
        additive  f(y) = y0 + D(y + y0),  D(h) = H(h) - h   (default)
        concat    f(y) = H(W [y; y0])
        initial   f(y) = H(y)            (y0 is only the solver's start)
    """

    optim_group = "head"

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_hidden: int,
        depth: int = 1,
        causal: bool = True,
        mlp: str = "relu2",
        gate_init: float = 0.75,
        gate_max: float = 1.0,
        max_seq_len: int = 2048,
        injection: Injection = "additive",
        n_kv_heads: int | None = None,
        style: BlockStyle | None = None,
        gate_clamp: float = GATE_CLAMP,
    ):
        super().__init__()
        if injection not in INJECTIONS:
            raise ValueError(f"AttractorHead: unknown injection {injection!r}; choose {INJECTIONS}")
        self.injection = injection
        self.blocks = nn.ModuleList(
            GatedBlock(
                dim,
                n_heads,
                mlp_hidden,
                n_kv_heads,
                causal=causal,
                mlp=mlp,
                gate_init=gate_init,
                gate_max=gate_max,
                gate_clamp=gate_clamp,
                max_seq_len=max_seq_len,
                style=style,
            )
            for _ in range(depth)
        )
        self.mix = nn.Linear(2 * dim, dim, bias=False) if injection == "concat" else None

    def stack(self, h: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """H(h): the K gated blocks, (B, T, C) -> (B, T, C)."""
        for i, block in enumerate(self.blocks):
            h = block(h, None if caches is None else caches[i])
        return h

    def forward(self, y: Tensor, y0: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """f(y; y0) for y, y0 of shape (B, T, C)."""
        if self.injection == "additive":
            h = y + y0
            return y0 + (self.stack(h, caches) - h)
        if self.injection == "concat":
            return self.stack(self.mix(torch.cat((y, y0), dim=-1)), caches)
        return self.stack(y, caches)

    def gates(self) -> list[tuple[Tensor, Tensor]]:
        return [block.gates() for block in self.blocks]
