"""DEQ baseline (DESIGN.md 2.4; Bai et al. 2019, "Deep Equilibrium Models"): a hidden-state
equilibrium found from a zero start, decoded by a separate (untied) output head.

    x = s * E[ids];  f(z; x) = Blocks(z + x) - z = x + D(z + x);  z* = f(z*; x);
    logits = W_out RMSNorm(z*)

D(h) = Blocks(h) - h is the sum of the residual branches of the n_layers pre-norm blocks.
The identity path of the blocks is taken out of f (as in the attractor map, DESIGN 2.1):
with it, f(z) = z + x + D(z + x) has Jacobian I + dD and Picard iteration only drifts.
Every branch reads its input through an RMSNorm, so D is bounded whatever z is; the untied
embedding starts at N(0, 1) (``embed_init_std``, as nanochat's), so x outweighs the branches
(init_std 0.02) and f starts as a strong contraction (about 10 Picard steps to 1e-6 at
width 768). With the GPT's 0.02 embedding the map is not contractive at width 256 and up.

The solve runs `attractor.fixed_point` from z = 0 with ``train_solver`` in training and
``eval_solver`` otherwise; gradients follow ``backward``. ``steps=k`` runs exactly k
f-evaluations (the current solver's method, tol 0, min_iter = max_iter = k, last iterate):
with Picard that is f^k(0), with or without autograd. ``steps=0``
decodes z = 0, i.e. all-zero logits (a uniform distribution), with nothing to differentiate.

Generation recomputes the whole sequence for each new token: caching a DEQ (the solve
couples every position's iterate) is out of scope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attractor.implicit import BACKWARDS, fixed_point
from attractor.layers import RMSNorm, init_weights
from attractor.models.base import LanguageModel, ModelOutput, block_stack, next_token_loss
from attractor.solvers import SolverConfig, SolverStats, solve, solver_for


def _train_solver() -> SolverConfig:
    return SolverConfig(method="anderson", tol=1e-3, max_iter=32)


def _eval_solver() -> SolverConfig:
    return SolverConfig(method="anderson", tol=1e-4, max_iter=64)


@dataclass
class DEQConfig:
    vocab_size: int = 32768
    dim: int = 768
    n_heads: int = 6
    mlp_ratio: int = 4
    mlp: str = "relu2"
    max_seq_len: int = 2048
    n_layers: int = 2  # blocks inside f
    train_solver: SolverConfig = field(default_factory=_train_solver)
    eval_solver: SolverConfig = field(default_factory=_eval_solver)
    backward: str = "onestep"  # onestep | neumann | adjoint | phantom
    backward_steps: int = 2  # k of phantom
    embed_scale: float = 1.0  # s in x = s * E[ids]
    embed_init_std: float = 1.0  # E ~ N(0, std^2): x must outweigh the bounded branches
    init_std: float = 0.02  # every other weight

    def __post_init__(self) -> None:
        if self.backward not in BACKWARDS:
            raise ValueError(
                f"deq: unknown backward {self.backward!r}; choose one of {', '.join(BACKWARDS)}"
            )
        if self.n_layers < 1 or self.backward_steps < 1:
            raise ValueError("deq: n_layers and backward_steps must be at least 1")


class DEQ(LanguageModel):
    kind = "deq"

    def __init__(self, config: DEQConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.blocks = block_stack(c, c.n_layers)
        self.norm = RMSNorm(c.dim)
        self.head = nn.Linear(c.dim, c.vocab_size, bias=False)  # untied from embed
        init_weights(self, c.init_std, c.init_std / math.sqrt(2 * c.n_layers))
        nn.init.normal_(self.embed.weight, 0.0, c.embed_init_std)

    def f(self, z: Tensor, x: Tensor) -> Tensor:
        """f(z; x) = Blocks(z + x) - z = x + D(z + x), (B, T, C)."""
        h = z + x
        for block in self.blocks:
            h = block(h)
        return h - z

    def solver_config(self, steps: int | None = None) -> SolverConfig:
        """The solve this forward runs: the train or eval solver, or exactly `steps` evaluations."""
        c = self.config
        return solver_for(c.train_solver, c.eval_solver, self.training, steps)

    def equilibrium(self, ids: Tensor, steps: int | None = None) -> tuple[Tensor, SolverStats]:
        """z* (B, T, C) solved from zero, with gradient by ``config.backward``, and the stats."""
        c = self.config
        x = c.embed_scale * self.embed(ids)  # (B, T, C)
        z0 = torch.zeros_like(x)

        def f(z: Tensor, active: Tensor | None = None) -> Tensor:  # active: freeze_converged
            return self.f(z, x)

        if steps == 0:
            return solve(f, z0, self.solver_config(0))
        return fixed_point(
            f,
            z0,
            self.solver_config(steps),
            backward=c.backward,
            backward_steps=c.backward_steps,
        )

    def decode(self, z: Tensor) -> Tensor:
        """logits = W_out RMSNorm(z), (B, T, V); W_out is not the input embedding."""
        return self.head(self.norm(z))

    def forward(
        self, input_ids: Tensor, labels: Tensor | None = None, steps: int | None = None
    ) -> ModelOutput:
        z, stats = self.equilibrium(input_ids, steps)
        logits = self.decode(z)
        loss = None if labels is None else next_token_loss(logits, labels)
        return ModelOutput(logits=logits, loss=loss, solver=stats)

    def new_cache(self) -> list[Tensor]:
        """No key/value cache: the "cache" is the list of ids so far, recomputed each step."""
        return []

    def extend(self, new_ids: Tensor, cache: list[Tensor]) -> Tensor:
        """Logits of new_ids, by re-solving the whole sequence held in cache."""
        cache.append(new_ids)
        ids = torch.cat(cache, dim=1)
        return self(ids).logits[:, -new_ids.size(1) :]
