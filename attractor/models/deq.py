"""DEQ baseline (docs/method.md section 2.5; Bai et al. 2019, "Deep Equilibrium Models"):
a hidden-state equilibrium found from a zero start, decoded by a separate (untied) head.

    x = s * E[ids];  f(z; x) = Blocks(z + x) - z = x + D(z + x);  z* = f(z*; x);
    logits = W_out RMSNorm(z*)

D(h) = Blocks(h) - h is the sum of the residual branches of the n_layers pre-norm blocks.
The identity path of the blocks is taken out of f (as in the attractor map, method 2.1):
with it, f(z) = z + x + D(z + x) has Jacobian I + dD and Picard iteration only drifts.
Every branch reads its input through an RMSNorm, so D is bounded whatever z is; the untied
embedding starts at N(0, 1) (``embed_init_std``, as nanochat's), so x outweighs the branches
(init_std 0.02) and f starts as a strong contraction (about 10 Picard steps to 1e-6 at
width 768). With the GPT's 0.02 embedding the map is not contractive at width 256 and up.

The solve runs `attractor.engine.fixed_point` from z = 0 with ``config.fixed_point``'s
training or evaluation solver; gradients follow its ``backward``. ``depth=k`` runs exactly k
f-evaluations (the current solver's method, tol 0, min_iter = max_iter = k, last iterate):
with Picard that is f^k(0), with or without autograd. ``depth=0``
decodes z = 0, i.e. all-zero logits (a uniform distribution), with nothing to differentiate.

Generation recomputes the whole sequence for each new token: caching a DEQ (the solve
couples every position's iterate) is out of scope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attractor.engine import FixedPointConfig, SolverConfig, SolverStats, solve
from attractor.models.flops import implicit_flops
from attractor.models.language_model import (
    LanguageModel,
    LanguageModelConfig,
    ModelOutput,
)
from attractor.models.registry import register
from attractor.nn import RMSNorm, block_stack, causal_keys, set_optim_group


def deq_fixed_point() -> FixedPointConfig:
    """Anderson from zero: tol 1e-3 and at most 32 iterations in training, 1e-4 and 64 in
    evaluation; Jacobian-free backward."""
    return FixedPointConfig(
        train_solver=SolverConfig(method="anderson", tol=1e-3, max_iter=32),
        eval_solver=SolverConfig(method="anderson", tol=1e-4, max_iter=64),
    )


@dataclass
class DEQConfig(LanguageModelConfig):
    """The DEQ baseline: n_layers blocks inside f, the solve and its gradient."""

    n_layers: int = 2  # blocks inside f
    fixed_point: FixedPointConfig = field(default_factory=deq_fixed_point)
    embed_init_std: float = 1.0  # E ~ N(0, std^2): x must outweigh the bounded branches

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_layers < 1:
            raise ValueError(f"deq: n_layers must be at least 1, got {self.n_layers}")


@register("deq", DEQConfig)
class DEQ(LanguageModel):
    """z* = f(z*; x) from a zero start, decoded by an untied head (module docstring)."""

    depth_unit = "solver iterations"

    def __init__(self, config: DEQConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.table_size, c.dim)
        self.blocks = block_stack(c, c.n_layers)
        self.norm = RMSNorm(c.dim, c.norm_eps)
        # untied from embed, and trained by AdamW like the embeddings, not by Muon
        self.head = set_optim_group(nn.Linear(c.dim, c.table_size, bias=False), "adamw")
        self.init_parameters(c.init_std / math.sqrt(2 * c.n_layers), iterated=self.blocks)
        nn.init.normal_(self.embed.weight, 0.0, c.embed_init_std)

    def f(self, z: Tensor, x: Tensor) -> Tensor:
        """f(z; x) = Blocks(z + x) - z = x + D(z + x), (B, T, C)."""
        h = z + x
        for block in self.blocks:
            h = block(h)
        return h - z

    def max_depth(self) -> int:
        """T_max: the evaluation solver's max_iter."""
        return self.config.fixed_point.eval_solver.max_iter

    def equilibrium(self, ids: Tensor, depth: int | None = None) -> tuple[Tensor, SolverStats]:
        """z* (B, T, C) solved from zero, with gradient by the configured backward, and the
        stats."""
        c = self.config
        x = c.embed_scale * self.embed(ids)  # (B, T, C)
        z0 = torch.zeros_like(x)

        def f(z: Tensor, active: Tensor | None = None) -> Tensor:  # active: freeze_converged
            return self.f(z, x)

        if depth == 0:
            return solve(f, z0, c.fixed_point.solver(self.training, 0))
        return c.fixed_point.solve(f, z0, self.training, depth)

    def decode(self, z: Tensor) -> Tensor:
        """logits = W_out RMSNorm(z), (B, T, V); W_out is not the input embedding."""
        return self.head(self.norm(z))

    def unembedding(self) -> Tensor:
        """W_out, the (V, C) untied head of decode."""
        return self.head.weight

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        depth: int | None = None,
        return_logits: bool = True,
    ) -> ModelOutput:
        """Logits of z* (of z = 0 at depth=0); loss when labels are given (`output`)."""
        z, stats = self.equilibrium(input_ids, depth)
        logits, loss = self.output(z, labels, return_logits)
        return ModelOutput(logits, loss, stats, stats.iters)

    def train_flops(
        self, out: ModelOutput, shape: tuple[int, ...], attention: bool = True
    ) -> float:
        """3 F_unembed + the solve and backward of f = the n_layers blocks (`implicit_flops`)."""
        c = self.config
        batch, seq_len = shape
        f = c.n_layers * c.block_flops(causal_keys(seq_len) if attention else 0.0)
        per_token = 3.0 * self.unembed_flops()
        if out.depth:  # depth 0 decodes the zero start: nothing of f runs
            per_token += implicit_flops(c.fixed_point, out.solver, out.solver.iters * f, f)
        return per_token * batch * seq_len

    def new_cache(self) -> list[Tensor]:
        """No key/value cache: the "cache" is the list of ids so far, recomputed each step."""
        return []

    def extend(self, new_ids: Tensor, cache: list[Tensor]) -> Tensor:
        """Logits of new_ids, by re-solving the whole sequence held in cache."""
        cache.append(new_ids)
        ids = torch.cat(cache, dim=1)
        return self(ids).logits[:, -new_ids.size(1) :]
