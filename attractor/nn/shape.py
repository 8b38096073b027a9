"""The shape every transformer-built model shares, and the blocks it stacks.

`TransformerShape` holds the fields that were copied between model configs: vocabulary,
width, heads, MLP, sequence length and the initialisation scale. A model config extends
it with its own fields; `block_stack` builds n blocks of that shape, and `block_flops`
counts what one of them costs (docs/method.md section 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from attractor.core.typed_config import validate
from attractor.nn.attention import QKNorm
from attractor.nn.block import Block, BlockStyle
from attractor.nn.rotary import RopeLayout


@dataclass
class TransformerShape:
    """vocab_size tokens, width dim, n_heads query heads (n_kv_heads key/value heads, None:
    as many), an MLP of mlp_ratio x dim hidden units (relu2 or swiglu), sequences of at
    most max_seq_len tokens (rotary tables grow past it), weights drawn at init_std.

    The block numerics (`BlockStyle`): norm_eps of every RMSNorm, the QK-norm form
    (learned: weight, before rotary; weightless: after rotary, as the paper's code), the
    rotary base and pair layout (half-split or interleaved), and mlp_scale on the MLP's
    hidden activation (the paper's ReLU^2 is 0.5 relu(x)^2)."""

    vocab_size: int = 32768
    dim: int = 768
    n_heads: int = 6
    n_kv_heads: int | None = None
    mlp_ratio: float = 4.0
    mlp: Literal["relu2", "swiglu"] = "relu2"
    max_seq_len: int = 2048
    init_std: float = 0.02
    norm_eps: float = 1e-6
    qk_norm: QKNorm = "learned"
    rope_base: float = 10000.0
    rope_layout: RopeLayout = "half"
    mlp_scale: float = 1.0

    def __post_init__(self) -> None:
        validate(self)
        if not (self.norm_eps > 0 and self.rope_base > 1 and self.mlp_scale > 0):
            raise ValueError(
                f"shape: need norm_eps > 0, rope_base > 1 and mlp_scale > 0, got "
                f"{self.norm_eps}, {self.rope_base}, {self.mlp_scale}"
            )
        if self.dim % self.n_heads or self.n_heads % self.kv_heads:
            raise ValueError(
                f"shape: dim {self.dim} must divide into n_heads {self.n_heads}, and n_heads "
                f"into n_kv_heads {self.kv_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def table_size(self) -> int:
        """Rows of the token tables (and logits): vocab_size; a language model may pad it."""
        return self.vocab_size

    def block_style(self) -> BlockStyle:
        """The block numerics these fields describe."""
        return BlockStyle(
            self.norm_eps, self.qk_norm, self.rope_base, self.rope_layout, self.mlp_scale
        )

    def mlp_hidden(self) -> int:
        """The MLP's hidden width: mlp_ratio x dim."""
        return int(self.mlp_ratio * self.dim)

    def block_flops(self, keys: float) -> float:
        """Forward FLOPs per token of one block: 2 per weight, plus attention scores and
        values, 4 * keys * dim, for a token attending over `keys` keys (0: weights only)."""
        mlp_mats = 3 if self.mlp == "swiglu" else 2
        weights = 2 * self.dim * self.dim + 2 * self.dim * self.kv_dim
        weights += mlp_mats * self.dim * self.mlp_hidden()
        return 2.0 * weights + 4.0 * keys * self.dim


def block_stack(
    shape: TransformerShape, n: int, causal: bool = True, block: type[Block] = Block
) -> nn.ModuleList:
    """n blocks of `shape` (causal or bidirectional; `block` picks pre- or post-norm)."""
    style = shape.block_style()
    return nn.ModuleList(
        block(shape.dim, shape.n_heads, shape.mlp_hidden(), shape.n_kv_heads, causal=causal,
              mlp=shape.mlp, max_seq_len=shape.max_seq_len, style=style)
        for _ in range(n)
    )  # fmt: skip


def causal_keys(seq_len: int) -> float:
    """The mean number of keys a token attends over in a causal sequence of seq_len."""
    return (seq_len + 1) / 2
