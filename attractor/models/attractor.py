"""The Attractor model's weight-tied head and its fixed-point map (DESIGN.md section 2.1)."""

from __future__ import annotations

from torch import Tensor, nn

from attractor.layers import GatedBlock, KVCache


class AttractorHead(nn.Module):
    """The attractor map with additive persistent injection:

        f(y; y0) = y0 + D(y + y0),   D(h) = H(h) - h,

    where H is a stack of K gated pre-norm blocks, the same K blocks at every iteration,
    and D is the sum of their gated residual branches.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_hidden: int,
        depth: int = 1,
        causal: bool = True,
        mlp: str = "relu2",
        gate_init: float = 0.75,
        gate_max: float = 0.75,
        max_seq_len: int = 2048,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            GatedBlock(
                dim,
                n_heads,
                mlp_hidden,
                causal=causal,
                mlp=mlp,
                gate_init=gate_init,
                gate_max=gate_max,
                max_seq_len=max_seq_len,
            )
            for _ in range(depth)
        )

    def forward(self, y: Tensor, y0: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """f(y; y0) for y, y0 of shape (B, T, C)."""
        h = y + y0
        out = h
        for i, block in enumerate(self.blocks):
            out = block(out, None if caches is None else caches[i])
        return y0 + (out - h)
