"""Looped LM baseline, Parcae-style (docs/method.md section 2.5): a prelude P, one
weight-tied stack of recurrent blocks R applied T times with a stable diagonal injection of
P's output, a coda C, and a tied decode.

    e = P(s * E[x]);  h_0 = 0;  h_t = R(exp(-dt A) * h_{t-1} + dt * B e),  t = 1 .. T;
    logits = E . RMSNorm(C(h_T))

with A = exp(A_log) > 0 and dt = softplus(dt_param) per channel (so the decay lies in (0, 1)
for any parameters: the linear part of the recurrence is stable), and B a dim x dim matrix
initialised to the identity.

Depth: in training (``model.training`` and ``depth is None``) one depth per batch is drawn,
T ~ max(1, Poisson(mu)) (``depth_draw="batch"``, from torch's global generator), or one per
sequence (``"sequence"``, the paper's code: T_i ~ max(1, Poisson(mu)), the batch runs
max_i T_i recurrences and sequence i keeps its state after its own T_i). Otherwise
T = ``eval_depth``, or ``depth`` when given; ``depth=0`` skips R and decodes the injection
into the zero state, C(dt * B e). In training mode gradients flow through the last
k = ``backprop_depth`` recurrences only (of each sequence), whatever T is: the first T - k
run under ``torch.no_grad``. The forward's T is in its output, ``out.depth`` (the batch's
maximum).

The paper's Parcae adds three things, each an option here: an RMSNorm on the prelude's
output (``prelude_norm``), a linear map C of the last state before the coda
(``state_proj``; logits = E . RMSNorm(Coda(C h_T))), and a random start h_0
(``state_init="random"``: truncated normal at the weights' std, times embed_scale, drawn at every
forward, in evaluation too).

Value embeddings (nanochat) sit on alternate layers of the logical stack P + R + C (layers
1, 3, 5 of 2 + 2 + 2); a table on a recurrent block is added at every recurrence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
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
    set_optim_group,
    value_embed_flops,
    value_embed_for,
    value_embeddings,
)


@dataclass
class LoopedConfig(LanguageModelConfig):
    """The looped baseline: prelude, recurrent and coda blocks, the depth distribution."""

    n_prelude: int = 2  # blocks of P
    n_recurrent: int = 2  # blocks of R, the stack applied T times
    n_coda: int = 2  # blocks of C
    mean_depth: float = 8.0  # mu: training depth T ~ max(1, Poisson(mu))
    backprop_depth: int = 4  # k: gradients flow through the last k recurrences
    eval_depth: int = 8  # T at evaluation and in generation
    value_embeds: bool = True  # alternate layers of P + R + C, gated
    value_gate_input: Literal["residual", "normed"] = "residual"  # paper's code: normed
    value_embed_std: float | None = None  # tables ~ N(0, std^2); None: init_std (paper: 1)
    depth_draw: Literal["batch", "sequence"] = "batch"  # one T per batch or per sequence
    prelude_norm: bool = False  # RMSNorm on the prelude's output (Parcae's ln_prelude)
    state_proj: bool = False  # linear C of the last state before the coda (Parcae's C)
    state_init: Literal["zero", "random"] = "zero"  # h_0; random: truncated normal

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


# Per-sequence recurrences (without gradient, with gradient), each (B,) long, or None.
Rows = tuple[Tensor, Tensor] | None


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
        self.embed = nn.Embedding(c.table_size, c.dim)
        self.prelude = block_stack(c, c.n_prelude)
        self.prelude_norm = RMSNorm(c.dim, c.norm_eps) if c.prelude_norm else None
        self.injection = DiagonalInjection(c.dim)
        self.recurrent = block_stack(c, c.n_recurrent)
        self.state_proj = None
        if c.state_proj:  # AdamW, as the paper's code trains its C
            self.state_proj = set_optim_group(nn.Linear(c.dim, c.dim, bias=False), "adamw")
        self.coda = block_stack(c, c.n_coda)
        self.value_embeds = value_embeddings(c, c.n_layers, c.value_embeds)
        self.norm = RMSNorm(c.dim, c.norm_eps)
        # out_std as for a plain stack as deep as the expected unrolled depth
        unrolled = c.n_prelude + c.n_coda + c.mean_depth * c.n_recurrent
        self.init_parameters(c.init_std / math.sqrt(2 * unrolled))
        init_value_tables(self.value_embeds.values(), c.value_embed_std, c.init)
        self.injection.reset_parameters()  # the init drew B as any Linear
        if self.state_proj is not None:  # C starts as the identity, like B
            with torch.no_grad():
                self.state_proj.weight.copy_(torch.eye(c.dim))

    # ------------------------------------------------------------------ depth
    def sample_depth(self) -> int:
        """A training depth T ~ max(1, Poisson(mu)), drawn from torch's global generator."""
        return max(1, int(torch.poisson(torch.tensor(float(self.config.mean_depth))).item()))

    def sample_row_depths(self, batch: int) -> tuple[Tensor, Tensor]:
        """Per-sequence training depths (the paper's per-sequence "poisson-truncated-full"
        draw, attractor/models/parcae/parcae.py of its code): T_i ~ max(1, Poisson(mu)),
        k_i = min(T_i, k) recurrences with gradient after n_i = T_i - k_i without; returns
        (n, k), each (batch,) long, from torch's global generator."""
        c = self.config
        total = torch.poisson(torch.full((batch,), float(c.mean_depth))).clamp_min(1).long()
        k = total.clamp_max(c.backprop_depth)
        return total - k, k

    def max_depth(self) -> int:
        """T_max: the evaluation depth."""
        return self.config.eval_depth

    def _depths(self, depth: int | None, batch: int) -> tuple[int, int, Rows]:
        """(T, recurrences that run without gradient, per-sequence (n, k) or None) for this
        forward."""
        c = self.config
        if depth is not None and depth < 0:
            raise ValueError(f"looped: depth must be >= 0, got {depth}")
        if depth is None and self.training and c.depth_draw == "sequence":
            n, k = self.sample_row_depths(batch)
            free = int(n.max())
            return free + int(k.max()), free, (n, k)
        if depth is None:
            depth = self.sample_depth() if self.training else c.eval_depth
        free = max(0, depth - c.backprop_depth) if self.training else 0
        return depth, free, None

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
        tables, gate_input = self.value_embeds, self.config.value_gate_input
        for i, block in enumerate(blocks):
            key = str(offset + i)
            ve = value_embed_for(tables[key], ids, h, gate_input) if key in tables else None
            h = block(h, None if caches is None else caches[i], ve)
        return h

    def recur(
        self,
        ids: Tensor,
        h: Tensor,
        decay: Tensor,
        u: Tensor,
        caches: list[KVCache] | None,
        active: Tensor | None = None,
    ) -> Tensor:
        """One recurrence: h <- R(decay * h + u); with `active` (B,) bool, only those rows
        move (the others keep h)."""
        new = self._run_blocks(self.recurrent, self.config.n_prelude, ids, decay * h + u, caches)
        return new if active is None else torch.where(active[:, None, None], new, h)

    def initial_state(self, e: Tensor) -> Tensor:
        """h_0: zeros, or (state_init="random", the paper's "like-init") a truncated normal
        at the weights' std (`weight_std`) within 3 std, times embed_scale."""
        c = self.config
        if c.state_init == "zero":
            return torch.zeros_like(e)
        h, std = torch.empty_like(e), c.weight_std()
        nn.init.trunc_normal_(h, 0.0, std, -3 * std, 3 * std)
        return h * c.embed_scale if c.embed_scale != 1.0 else h

    def hidden(
        self,
        ids: Tensor,
        depth: int,
        free: int = 0,
        cache: LoopedCache | None = None,
        rows: Rows = None,
    ) -> Tensor:
        """The residual stream after the coda, (B, T, C), before the final norm, with `depth`
        recurrences of which the first `free` run without gradient; with `rows` = (n, k),
        sequence i runs n_i of the first `free` and k_i of the rest."""
        c = self.config
        x = c.embed_scale * self.embed(ids)  # (B, T, C)
        e = self._run_blocks(self.prelude, 0, ids, x, None if cache is None else cache.prelude)
        if self.prelude_norm is not None:
            e = self.prelude_norm(e)
        decay, u = self.injection.coefficients(e)  # (C,), (B, T, C)
        h = u  # the injection into the zero state: what depth=0 decodes
        if depth > 0:
            h = self.initial_state(e)
            step_caches = cache.recurrent if cache is not None else [None] * depth
            n, k = rows if rows is not None else (None, None)
            with torch.no_grad():
                for t in range(free):
                    h = self.recur(ids, h, decay, u, step_caches[t], None if n is None else t < n)
            h = h.detach()
            for t in range(free, depth):
                active = None if k is None else t - free < k
                h = self.recur(ids, h, decay, u, step_caches[t], active)
        if self.state_proj is not None:
            h = self.state_proj(h)
        offset = c.n_prelude + c.n_recurrent
        return self._run_blocks(self.coda, offset, ids, h, None if cache is None else cache.coda)

    def decode(self, h: Tensor) -> Tensor:
        """logits = E . RMSNorm(h), tied with the input embedding: (B, T, V)."""
        return self.norm(h) @ self.embed.weight.T

    # ------------------------------------------------------------------ interface
    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        depth: int | None = None,
        return_logits: bool = True,
    ) -> ModelOutput:
        """Logits after T recurrences (module docstring for T); loss when labels are given."""
        depth, free, rows = self._depths(depth, input_ids.size(0))
        h = self.hidden(input_ids, depth, free, rows=rows)
        logits, loss = self.output(h, labels, return_logits)
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
        injection = 2.0 * c.dim * c.dim * (2 if c.state_proj else 1)  # B e (and C h), once
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
