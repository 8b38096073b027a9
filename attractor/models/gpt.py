"""GPT baseline: a stack of pre-norm causal blocks (docs/method.md section 2.5), with
nanochat-style value embeddings on alternate layers and a tied output embedding."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from attractor.models.language_model import (
    LanguageModel,
    LanguageModelConfig,
    ModelOutput,
)
from attractor.models.registry import register
from attractor.nn import (
    KVCache,
    RMSNorm,
    block_stack,
    causal_keys,
    init_value_tables,
    value_embed_flops,
    value_embed_for,
    value_embeddings,
)


@dataclass
class GPTConfig(LanguageModelConfig):
    """The GPT baseline: n_layers pre-norm causal blocks, optional value embeddings."""

    n_layers: int = 6
    value_embeds: bool = True  # a vocab x kv_dim table on alternate layers, gated
    value_gate_input: Literal["residual", "normed"] = "residual"  # paper's code: normed
    value_embed_std: float | None = None  # tables ~ N(0, std^2); None: init_std (paper: 1)


@register("gpt", GPTConfig)
class GPT(LanguageModel):
    """A fixed-depth causal transformer with a tied decode (module docstring)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.table_size, c.dim)
        self.blocks = block_stack(c, c.n_layers)
        self.value_embeds = value_embeddings(c, c.n_layers, c.value_embeds)
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.init_parameters(c.init_std / math.sqrt(2 * c.n_layers))
        init_value_tables(self.value_embeds.values(), c.value_embed_std, c.init)

    def hidden(self, ids: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """The residual stream after every block, (B, T, C), before the final norm."""
        x = self.config.embed_scale * self.embed(ids)  # (B, T, C)
        tables, gate_input = self.value_embeds, self.config.value_gate_input
        for i, block in enumerate(self.blocks):
            ve = value_embed_for(tables[str(i)], ids, x, gate_input) if str(i) in tables else None
            x = block(x, None if caches is None else caches[i], ve)
        return x

    def decode(self, h: Tensor) -> Tensor:
        """logits = E . RMSNorm(h), tied with the input embedding: (B, T, V)."""
        return self.norm(h) @ self.embed.weight.T

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        depth: int | None = None,
        return_logits: bool = True,
    ) -> ModelOutput:
        """Logits (and loss with labels); a GPT has no solver depth, so `depth` must be None."""
        if depth is not None:
            raise ValueError("gpt: a fixed-depth transformer takes no depth=; it has no solver")
        logits, loss = self.output(self.hidden(input_ids), labels, return_logits)
        return ModelOutput(logits=logits, loss=loss)

    def train_flops(
        self, out: ModelOutput, shape: tuple[int, ...], attention: bool = True
    ) -> float:
        """3 (F_blocks + F_value_gates + F_unembed) per token."""
        c = self.config
        batch, seq_len = shape
        block = c.block_flops(causal_keys(seq_len) if attention else 0.0)
        per_token = (
            c.n_layers * block
            + value_embed_flops(self.value_embeds.values())
            + self.unembed_flops()
        )
        return 3.0 * per_token * batch * seq_len

    def new_cache(self) -> list[KVCache]:
        """One empty key/value cache per block."""
        return [KVCache() for _ in self.blocks]

    def extend(self, new_ids: Tensor, cache: list[KVCache]) -> Tensor:
        """Logits of new_ids appended to the cached sequence."""
        return self.decode(self.hidden(new_ids, cache))
