"""What every language model shares: its config base, its output, its loss, generation.

A language model subclasses `LanguageModel` and implements
- `forward(input_ids, labels=None, depth=None, return_logits=True) -> ModelOutput` on whole
  sequences, its logits and loss made by `output` (``return_logits=False`` with labels: the
  loss in chunks, `linear_cross_entropy`, and no logits: what the trainer asks for);
- `extend(new_ids, cache) -> logits (B, T_new, V)`: the logits of new tokens appended to a
  sequence whose state lives in `cache` (from `new_cache()`), for fast generation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attractor.engine import SolverStats
from attractor.models.base import Model
from attractor.models.linear_loss import IGNORE_INDEX, linear_cross_entropy
from attractor.nn import (
    TransformerShape,
    init_scaled_orthogonal,
    init_weights,
    scaled_orthogonal_std,
)


@dataclass
class LanguageModelConfig(TransformerShape):
    """A transformer shape plus the input-embedding scale s in x~ = s * E[x], and the padded
    vocabulary: padded_vocab_size rows in the token tables and columns in the logits (the
    paper's code rounds vocab_size up to a multiple; None: vocab_size). The padding rows
    are never a token: the data must fit vocab_size and generation samples below it, but
    the loss's softmax runs over every column, as the paper's code does."""

    embed_scale: float = 1.0
    padded_vocab_size: int | None = None
    # gpt: N(0, init_std^2), output projections scaled down (ours) | scaled-orthogonal: the
    # paper's, std sqrt(2 / (5 dim)), output projections zero but in the iterated map
    init: Literal["gpt", "scaled-orthogonal"] = "gpt"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.padded_vocab_size is not None and self.padded_vocab_size < self.vocab_size:
            raise ValueError(
                f"padded_vocab_size {self.padded_vocab_size} is below vocab_size "
                f"{self.vocab_size}; give at least vocab_size, or null for no padding"
            )

    @property
    def table_size(self) -> int:
        """Rows of the token tables and columns of the logits: the padded vocabulary."""
        return self.padded_vocab_size or self.vocab_size

    def weight_std(self) -> float:
        """The std the init draws the weights at: init_std, or sqrt(2 / (5 dim))."""
        return self.init_std if self.init == "gpt" else scaled_orthogonal_std(self.dim)


@dataclass
class ModelOutput:
    """logits (B, T, V), None when the forward was asked for the loss alone
    (``return_logits=False``); loss: mean next-token cross-entropy when labels were given;
    solver: the fixed-point solve's statistics for models that have one; depth: the depth
    this forward ran (solver iterations or recurrences; None for a fixed-depth model)."""

    logits: Tensor | None
    loss: Tensor | None = None
    solver: SolverStats | None = None
    depth: int | None = None


def next_token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of logits (B, T, V) against labels (B, T).

    labels[b, t] is the token that follows input_ids[b, t] (already shifted, as in nanoGPT);
    positions labelled -100 are ignored.
    """
    return F.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX
    )


def sample_next(logits: Tensor, temperature: float = 0.0, top_k: int | None = None) -> Tensor:
    """One token per row from logits (B, V): argmax at temperature 0, else softmax(l / t)
    restricted to the top k."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1).squeeze(-1)


class LanguageModel(Model):
    """Base class of the causal language models (attractor, gpt, looped, deq)."""

    config: LanguageModelConfig

    def init_parameters(self, out_std: float, iterated: Iterable[nn.Module] = ()) -> None:
        """Draw every weight by config.init: "gpt" N(0, init_std^2) with output projections
        at out_std (`init_weights`), "scaled-orthogonal" the paper's (`init_scaled_orthogonal`;
        `iterated`: the maps a solver iterates, whose output projections stay non-zero)."""
        c = self.config
        if c.init == "gpt":
            init_weights(self, c.init_std, out_std)
        else:
            init_scaled_orthogonal(self, c.dim, iterated)

    def new_cache(self) -> Any:
        """Fresh per-sequence state for `extend` (key/value caches, solved states)."""
        raise NotImplementedError

    def extend(self, new_ids: Tensor, cache: Any) -> Tensor:
        """Logits (B, T_new, V) of new_ids appended to the sequence held in cache."""
        raise NotImplementedError

    def decode(self, h: Tensor) -> Tensor:
        """Logits (B, T, V) of the final state h (B, T, C)."""
        raise NotImplementedError

    def unembedding(self) -> Tensor:
        """The output projection W (V, C) of decode(h) = W RMSNorm(h): the tied embedding
        (models with their own head override this)."""
        return self.embed.weight

    def output(
        self, h: Tensor, labels: Tensor | None, return_logits: bool = True
    ) -> tuple[Tensor | None, Tensor | None]:
        """(logits, loss) of the final state h (B, T, C). With labels and ``return_logits``
        False the loss is computed chunk by chunk (`linear_cross_entropy`, the same value
        and gradients) and the (B, T, V) logits are never made: (None, loss)."""
        if labels is not None and not return_logits:
            return None, linear_cross_entropy(self.norm(h), self.unembedding(), labels)
        if labels is None and not return_logits:
            raise ValueError(
                "forward: return_logits=False needs labels (the loss is then all it returns); "
                "pass labels= or return_logits=True"
            )
        logits = self.decode(h)
        return logits, None if labels is None else next_token_loss(logits, labels)

    def unembed_flops(self) -> float:
        """Forward FLOPs per token of the output projection: 2 * dim * (padded) vocab."""
        return 2.0 * self.config.dim * self.config.table_size

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Append max_new_tokens sampled tokens to prompt_ids (B, T); returns (B, T + new).

        With ``use_cache`` each new token runs through `extend` against the cached state;
        without it every step recomputes the whole sequence with `forward` (the reference
        the cached path must equal).
        """
        if prompt_ids.dim() != 2 or prompt_ids.size(1) == 0:
            raise ValueError(
                f"generate: prompt_ids must be (batch, length>0), got {tuple(prompt_ids.shape)}"
            )
        ids = prompt_ids
        cache = self.new_cache() if use_cache else None
        logits = self.extend(ids, cache) if use_cache else self(ids).logits
        vocab = self.config.vocab_size  # padding columns are never a token
        for _ in range(max_new_tokens):
            nxt = sample_next(logits[:, -1, :vocab], temperature, top_k)[:, None]  # (B, 1)
            ids = torch.cat((ids, nxt), dim=1)
            logits = self.extend(nxt, cache) if use_cache else self(ids).logits
        return ids
