"""Looped LM baseline, Parcae-style (docs/method.md section 2.5): a prelude P, one
weight-tied stack of recurrent blocks R applied T times with a stable diagonal injection of
P's output, a coda C, and a tied decode.

    e = P(s * E[x]);  h_0 = 0;  h_t = R(exp(-dt A) * h_{t-1} + dt * B e),  t = 1 .. T;
    logits = E . RMSNorm(C(h_T))

with A = exp(A_log) > 0 and dt = softplus(dt_param) per channel (so the decay lies in (0, 1)
for any parameters: the linear part of the recurrence is stable), and B a dim x dim matrix
initialised to the identity.

Depth: in training (``model.training`` and ``depth is None``) one depth per batch is drawn,
T ~ max(1, Poisson(mu)) (one draw for the whole batch, not one per sequence, from torch's
global generator). Otherwise T = ``eval_depth``, or ``depth`` when given; ``depth=0`` skips
R and decodes the injection into the zero state, C(dt * B e). In training mode gradients flow
through the last k = ``backprop_depth`` recurrences only, whatever T is: the first T - k run
under ``torch.no_grad``. The forward's T is in its output, ``out.depth``.

Value embeddings (nanochat) sit on alternate layers of the logical stack P + R + C (layers
1, 3, 5 of 2 + 2 + 2); a table on a recurrent block is added at every recurrence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attractor.models.language_model import (
    LanguageModel,
    LanguageModelConfig,
    ModelOutput,
    next_token_loss,
)
from attractor.models.registry import register
from attractor.nn import (
    KVCache,
    RMSNorm,
    block_stack,
    causal_keys,
    init_weights,
    value_embed_flops,
    value_embeddings,
)


@dataclass
class LoopedConfig(LanguageModelConfig):
    """The looped baseline: prelude, recurrent and coda blocks, the depth distribution."""

    n_prelude: int = 2  # blocks of P
    n_recurrent: int = 2  # blocks of R, the stack applied T times
    n_coda: int = 2  # blocks of C
    mean_depth: float = 8.0  # mu: training depth T ~ max(1, Poisson(mu)), one draw per batch
    backprop_depth: int = 4  # k: gradients flow through the last k recurrences
    eval_depth: int = 8  # T at evaluation and in generation
    value_embeds: bool = True  # alternate layers of P + R + C, gated

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_recurrent < 1 or self.n_prelude < 0 or self.n_coda < 0:
            raise ValueError(
                "looped: need n_recurrent >= 1 and n_prelude, n_coda >= 0, got "
                f"{self.n_prelude}/{self.n_recurrent}/{self.n_coda}"
            )
        if self.mean_depth <= 0 or self.backprop_depth < 1 or self.eval_depth < 0:
            raise ValueError(
                "looped: need mean_depth > 0, backprop_depth >= 1 and eval_depth >= 0, got "
                f"{self.mean_depth}, {self.backprop_depth}, {self.eval_depth}"
            )

    @property
    def n_layers(self) -> int:
        """Blocks in the logical stack P + R + C (R counted once)."""
        return self.n_prelude + self.n_recurrent + self.n_coda


# softplus(DT_PARAM_INIT) = 1: with A = 1 the state starts decaying by exp(-1) a step and e
# enters at full strength.
DT_PARAM_INIT = math.log(math.expm1(1.0))


class DiagonalInjection(nn.Module):
    """Stable diagonal injection (Parcae): h <- exp(-dt * A) * h + dt * B e, per channel
    A = exp(A_log) > 0 and dt = softplus(dt_param), so the decay lies in (0, 1).
    Starts at A = 1, dt = 1, B = I."""

    def __init__(self, dim: int):
        super().__init__()
        self.A_log = nn.Parameter(torch.empty(dim))
        self.dt_param = nn.Parameter(torch.empty(dim))
        self.B = nn.Linear(dim, dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A = 1, dt = 1, B = I."""
        with torch.no_grad():
            self.A_log.zero_()
            self.dt_param.fill_(DT_PARAM_INIT)
            self.B.weight.copy_(torch.eye(self.B.weight.size(0)))

    def coefficients(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """(decay, u) with decay = exp(-dt A), (C,), and u = dt * B e, (B, T, C): one
        injection is then h <- decay * h + u."""
        dt = F.softplus(self.dt_param.float())  # (C,)
        decay = torch.exp(-dt * self.A_log.float().exp())  # (C,)
        return decay.to(e.dtype), dt.to(e.dtype) * self.B(e)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        """One injection: decay * h + dt * B e."""
        decay, u = self.coefficients(e)
        return decay * h + u


@dataclass
class LoopedCache:
    """Key/value caches for generation: one per prelude block, one per (recurrence step,
    recurrent block), since each step is a different application of the tied blocks, and
    one per coda block. The depth is fixed by the cache: ``len(recurrent)``."""

    prelude: list[KVCache]
    recurrent: list[list[KVCache]]  # [step][block]
    coda: list[KVCache]

    @property
    def depth(self) -> int:
        """The recurrences these caches were built for."""
        return len(self.recurrent)


@register("looped", LoopedConfig)
class LoopedLM(LanguageModel):
    """Prelude, a weight-tied recurrence applied T times, coda (module docstring)."""

    depth_unit = "recurrences"

    def __init__(self, config: LoopedConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.prelude = block_stack(c, c.n_prelude)
        self.injection = DiagonalInjection(c.dim)
        self.recurrent = block_stack(c, c.n_recurrent)
        self.coda = block_stack(c, c.n_coda)
        self.value_embeds = value_embeddings(c, c.n_layers, c.value_embeds)
        self.norm = RMSNorm(c.dim)
        # out_std as for a plain stack as deep as the expected unrolled depth
        unrolled = c.n_prelude + c.n_coda + c.mean_depth * c.n_recurrent
        init_weights(self, c.init_std, c.init_std / math.sqrt(2 * unrolled))
        self.injection.reset_parameters()  # init_weights drew B from N(0, std^2)

    # ------------------------------------------------------------------ depth
    def sample_depth(self) -> int:
        """A training depth T ~ max(1, Poisson(mu)), drawn from torch's global generator."""
        return max(1, int(torch.poisson(torch.tensor(float(self.config.mean_depth))).item()))

    def max_depth(self) -> int:
        """T_max: the evaluation depth."""
        return self.config.eval_depth

    def _depths(self, depth: int | None) -> tuple[int, int]:
        """(T, recurrences that run without gradient) for this forward."""
        c = self.config
        if depth is not None and depth < 0:
            raise ValueError(f"looped: depth must be >= 0, got {depth}")
        if depth is None:
            depth = self.sample_depth() if self.training else c.eval_depth
        free = max(0, depth - c.backprop_depth) if self.training else 0
        return depth, free

    # ------------------------------------------------------------------ stack
    def _run_blocks(
        self,
        blocks: nn.ModuleList,
        offset: int,
        ids: Tensor,
        h: Tensor,
        caches: list[KVCache] | None,
    ) -> Tensor:
        """h through `blocks`, whose first block is layer `offset` of the logical stack."""
        for i, block in enumerate(blocks):
            key = str(offset + i)
            ve = self.value_embeds[key](ids, h) if key in self.value_embeds else None
            h = block(h, None if caches is None else caches[i], ve)
        return h

    def recur(
        self, ids: Tensor, h: Tensor, decay: Tensor, u: Tensor, caches: list[KVCache] | None
    ) -> Tensor:
        """One recurrence: h <- R(decay * h + u)."""
        return self._run_blocks(self.recurrent, self.config.n_prelude, ids, decay * h + u, caches)

    def hidden(
        self,
        ids: Tensor,
        depth: int,
        free: int = 0,
        cache: LoopedCache | None = None,
    ) -> Tensor:
        """The residual stream after the coda, (B, T, C), before the final norm, with `depth`
        recurrences of which the first `free` run without gradient."""
        c = self.config
        x = c.embed_scale * self.embed(ids)  # (B, T, C)
        e = self._run_blocks(self.prelude, 0, ids, x, None if cache is None else cache.prelude)
        decay, u = self.injection.coefficients(e)  # (C,), (B, T, C)
        h = u  # the injection into the zero state: what depth=0 decodes
        if depth > 0:
            h = torch.zeros_like(e)
            step_caches = cache.recurrent if cache is not None else [None] * depth
            with torch.no_grad():
                for t in range(free):
                    h = self.recur(ids, h, decay, u, step_caches[t])
            h = h.detach()
            for t in range(free, depth):
                h = self.recur(ids, h, decay, u, step_caches[t])
        offset = c.n_prelude + c.n_recurrent
        return self._run_blocks(self.coda, offset, ids, h, None if cache is None else cache.coda)

    def decode(self, h: Tensor) -> Tensor:
        """logits = E . RMSNorm(h), tied with the input embedding: (B, T, V)."""
        return self.norm(h) @ self.embed.weight.T

    # ------------------------------------------------------------------ interface
    def forward(
        self, input_ids: Tensor, labels: Tensor | None = None, depth: int | None = None
    ) -> ModelOutput:
        """Logits after T recurrences (module docstring for T); loss when labels are given."""
        depth, free = self._depths(depth)
        logits = self.decode(self.hidden(input_ids, depth, free))
        loss = None if labels is None else next_token_loss(logits, labels)
        return ModelOutput(logits=logits, loss=loss, depth=depth)

    def train_flops(
        self, out: ModelOutput, shape: tuple[int, ...], attention: bool = True
    ) -> float:
        """3 (F_prelude + F_B + k F_recurrent + F_coda + F_unembed) + (T - k) F_recurrent for
        T recurrences, the last k with gradient (value-embedding gates counted where they
        run: once for P and C, every recurrence for R)."""
        c = self.config
        batch, seq_len = shape
        block = c.block_flops(causal_keys(seq_len) if attention else 0.0)
        looped = {str(c.n_prelude + i) for i in range(c.n_recurrent)}
        tables = self.value_embeds.items()
        ve_once = value_embed_flops(v for key, v in tables if key not in looped)
        recurrent = c.n_recurrent * block + value_embed_flops(
            v for key, v in tables if key in looped
        )
        k = min(c.backprop_depth, out.depth)
        injection = 2.0 * c.dim * c.dim  # B e, once a forward
        graph = (c.n_prelude + c.n_coda) * block + ve_once + injection + self.unembed_flops()
        per_token = 3.0 * (graph + k * recurrent) + (out.depth - k) * recurrent
        return per_token * batch * seq_len

    def new_cache(self, depth: int | None = None) -> LoopedCache:
        """Caches for generation at `depth` recurrences (default ``eval_depth``)."""
        depth = self.config.eval_depth if depth is None else depth
        return LoopedCache(
            prelude=[KVCache() for _ in self.prelude],
            recurrent=[[KVCache() for _ in self.recurrent] for _ in range(depth)],
            coda=[KVCache() for _ in self.coda],
        )

    def extend(self, new_ids: Tensor, cache: LoopedCache) -> Tensor:
        """Logits of new_ids appended to the cached sequence, at the cache's depth."""
        return self.decode(self.hidden(new_ids, cache.depth, cache=cache))
