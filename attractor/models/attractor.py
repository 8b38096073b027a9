"""Attractor language model (docs/method.md section 2.1).

A causal backbone B proposes the output embeddings y0 = B(s * E[x]); a weight-tied head
of K gated blocks H defines the map f(y; y0) = y0 + D(y + y0), D(h) = H(h) - h; the
solver finds y* = f(y*; y0) starting from y0, and logits = E . RMSNorm(y*).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from attractor.engine import FixedPointConfig, SolverConfig, SolverStats, solve, spectral_radius
from attractor.models.flops import implicit_flops
from attractor.models.language_model import (
    LanguageModel,
    LanguageModelConfig,
    ModelOutput,
)
from attractor.models.registry import register
from attractor.nn import (
    GATE_CLAMP,
    AttractorHead,
    KVCache,
    RMSNorm,
    block_stack,
    causal_keys,
    set_optim_group,
)


def paper_fixed_point() -> FixedPointConfig:
    """The default solve in training and evaluation: the 140m preset's Anderson, tol 3e-4,
    6-64 iterations, with every position stopping on its own residual (ours)."""
    solver = SolverConfig("anderson", tol=3e-4, max_iter=64, min_iter=6, freeze_converged=True)
    return FixedPointConfig(train_solver=solver, eval_solver=solver)


SolveUnit = Literal["position", "sequence"]


@dataclass
class AttractorConfig(LanguageModelConfig):
    """The Attractor LM: N backbone blocks, K gated head blocks, the solve and its gradient."""

    dim: int = 1024
    n_heads: int = 8
    n_backbone: int = 7  # N causal blocks proposing y0
    n_head_layers: int = 1  # K gated blocks in the attractor head
    gate_init: float = 0.75
    gate_max: float = 1.0
    gate_clamp: float = GATE_CLAMP  # starting g_init / g_max at most 1 - this (paper: 1e-6)
    fixed_point: FixedPointConfig = field(default_factory=paper_fixed_point)
    injection: Literal["additive", "concat", "initial"] = "additive"  # paper Table 4
    start: Literal["proposal", "zero", "noise"] = "proposal"  # paper Table 6
    tied_head: bool = True  # decode with E (tied) or a separate linear head
    solve_unit: SolveUnit = "position"  # one solver sample a position (exactly causal) or a
    # sequence (the paper's code: one residual norm and one set of Anderson weights over (T, C))


class HeadMap:
    """f(y; y0) for the solver, with every position (``unit="position"``) or every sequence
    (``unit="sequence"``, the paper's code) a sample of its own.

    Per position the solver sees y flattened to (B*T, C): each position gets its own
    residual, its own Anderson weights and (with ``freeze_converged``) its own stopping
    time. Positions are coupled only through causal attention, so a position's solution
    depends on no later token, exactly, not just up to the tolerance. Per sequence the
    solver sees (B, T*C): one residual over the whole sequence and one set of Anderson
    weights, so every position's iterate mixes in images weighted by later positions'
    residuals (causal only up to the tolerance). Called with an ``active`` mask, the head
    runs only on the sequences that still have an active sample, so a batch costs about the
    mean depth of its sequences rather than the maximum.
    """

    def __init__(
        self,
        head: AttractorHead,
        y0: Tensor,
        caches: list[KVCache] | None = None,
        unit: SolveUnit = "position",
    ):
        self.head, self.y0, self.caches = head, y0, caches
        self.prefix = caches[0].length if caches else 0
        self.shape = y0.shape
        self.unit = unit
        self._rows: tuple[Tensor, list[KVCache] | None] | None = None

    def flat(self, y: Tensor) -> Tensor:
        """(B, T, C) -> (B*T, C), a sample a position, or (B, T*C), a sample a sequence."""
        B, T, C = self.shape
        return y.reshape(B * T, C) if self.unit == "position" else y.reshape(B, T * C)

    def __call__(self, y_flat: Tensor, active: Tensor | None = None) -> Tensor:
        B, T, C = self.shape
        y = y_flat.view(B, T, C)
        rows = None if active is None else active.view(B, -1).any(dim=1)
        if rows is None or bool(rows.all()):
            return self.flat(self._apply(y, self.y0, self.caches))
        idx, caches = self._subset(rows)
        out = y.clone()  # finished sequences keep their state; the solver ignores them
        out[idx] = self._apply(y[idx], self.y0[idx], caches)
        return self.flat(out)

    def _apply(self, y: Tensor, y0: Tensor, caches: list[KVCache] | None) -> Tensor:
        for c in caches or []:
            c.crop(self.prefix)  # forget the keys and values of the previous iterate
        return self.head(y, y0, caches)

    def _subset(self, rows: Tensor) -> tuple[Tensor, list[KVCache] | None]:
        """Indices of the active sequences and their caches, rebuilt only when they change."""
        idx = rows.nonzero().squeeze(1)
        if self._rows is None or not torch.equal(self._rows[0], idx):
            caches = None if self.caches is None else [c.select(idx) for c in self.caches]
            self._rows = (idx, caches)
        return self._rows


@dataclass
class AttractorCache:
    """Generation state: KV caches of the backbone and of the head at the solved states."""

    backbone: list[KVCache]
    head: list[KVCache]


@register("attractor", AttractorConfig)
class AttractorLM(LanguageModel):
    """Backbone proposal y0, attractor head solved to y*, tied (or untied) decode."""

    depth_unit = "solver iterations"

    def __init__(self, config: AttractorConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.table_size, c.dim)
        self.backbone = block_stack(c, c.n_backbone)
        self.head = AttractorHead(
            c.dim,
            c.n_heads,
            c.mlp_hidden(),
            depth=c.n_head_layers,
            mlp=c.mlp,
            gate_init=c.gate_init,
            gate_max=c.gate_max,
            max_seq_len=c.max_seq_len,
            injection=c.injection,
            n_kv_heads=c.n_kv_heads,
            style=c.block_style(),
            gate_clamp=c.gate_clamp,
        )
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.lm_head = None
        if not c.tied_head:  # an untied output projection trains with AdamW, not Muon
            self.lm_head = set_optim_group(nn.Linear(c.dim, c.table_size, bias=False), "adamw")
        n_layers = c.n_backbone + c.n_head_layers
        self.init_parameters(c.init_std / math.sqrt(2 * n_layers), iterated=[self.head])

    # ------------------------------------------------------------------ pieces
    def proposal(self, ids: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """y0 = B(s * E[ids]): the backbone's residual stream, (B, T, C)."""
        x = self.config.embed_scale * self.embed(ids)  # (B, T, C)
        for i, block in enumerate(self.backbone):
            x = block(x, None if caches is None else caches[i])
        return x

    def start_point(self, y0: Tensor) -> Tensor:
        """Where the solver starts (paper Table 6): y0, zeros, or noise at y0's scale."""
        if self.config.start == "proposal":
            return y0
        if self.config.start == "zero":
            return torch.zeros_like(y0)
        scale = y0.detach().pow(2).mean(dim=-1, keepdim=True).sqrt()
        return torch.randn_like(y0) * scale

    def decode(self, y: Tensor) -> Tensor:
        """logits = E . RMSNorm(y) (tied) or W_out RMSNorm(y): (B, T, V)."""
        h = self.norm(y)
        return h @ self.embed.weight.T if self.lm_head is None else self.lm_head(h)

    def unembedding(self) -> Tensor:
        """E (tied) or W_out: the (V, C) matrix of decode."""
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def max_depth(self) -> int:
        """T_max: the evaluation solver's max_iter."""
        return self.config.fixed_point.eval_solver.max_iter

    # ------------------------------------------------------------------ whole sequences
    def equilibrium(
        self, y0: Tensor, depth: int | None = None
    ) -> tuple[Tensor, SolverStats | None]:
        """y* = f(y*; y0) per position (or per sequence, `solve_unit`), with the configured
        gradient; depth=0 returns y0.

        The solver's stats are per sample: residual, converged and sample_iters are (B*T,)
        tensors in row-major (batch, position) order, or (B,) per sequence.
        """
        if depth == 0:
            return y0, None
        f = HeadMap(self.head, y0, unit=self.config.solve_unit)
        y, stats = self.config.fixed_point.solve(
            f, f.flat(self.start_point(y0)), self.training, depth
        )
        return y.view_as(y0), stats

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        depth: int | None = None,
        return_logits: bool = True,
    ) -> ModelOutput:
        """Logits of y* (or of y0 when depth=0); loss when labels are given (`output`)."""
        y, stats = self.equilibrium(self.proposal(input_ids), depth)
        logits, loss = self.output(y, labels, return_logits)
        return ModelOutput(logits, loss, stats, 0 if stats is None else stats.iters)

    def train_flops(
        self, out: ModelOutput, shape: tuple[int, ...], attention: bool = True
    ) -> float:
        """3 (F_backbone + F_unembed) + the head's solve and backward (`implicit_flops`),
        where a sequence runs the head while any of its positions is still iterating."""
        c = self.config
        batch, seq_len = shape
        block = c.block_flops(causal_keys(seq_len) if attention else 0.0)
        head = c.n_head_layers * block + (4.0 * c.dim * c.dim if c.injection == "concat" else 0.0)
        per_token = 3.0 * (c.n_backbone * block + self.unembed_flops())
        if out.solver is not None:
            rows = out.solver.sample_iters.view(batch, -1).max(dim=1).values.float().mean()
            per_token += implicit_flops(c.fixed_point, out.solver, float(rows) * head, head)
        return per_token * batch * seq_len

    @torch.no_grad()
    def monitor(self, input_ids: Tensor, spectral: bool = False) -> dict[str, object]:
        """Solver iterations and residual, |y* - y0| / |y0|, gate means, and on request the
        spectral radius of df/dy at y*."""
        y0 = self.proposal(input_ids)
        y, stats = self.equilibrium(y0)
        report: dict[str, object] = {
            "iters": stats.iters,
            "residual": float(stats.residual.max()),
            "converged": float(stats.converged.float().mean()),
            "shift": float((y - y0).norm() / y0.norm()),
            "gates": [(float(a.mean()), float(m.mean())) for a, m in self.head.gates()],
        }
        if spectral:
            report["spectral_radius"] = spectral_radius(lambda v: self.head(v, y0), y)
        return report

    # ------------------------------------------------------------------ generation
    def new_cache(self) -> AttractorCache:
        """Empty key/value caches for the backbone and the head blocks."""
        return AttractorCache(
            backbone=[KVCache() for _ in self.backbone],
            head=[KVCache() for _ in self.head.blocks],
        )

    def extend(self, new_ids: Tensor, cache: AttractorCache) -> Tensor:
        """Logits of new tokens, solving only their positions against cached equilibria.

        The head is causal, so earlier positions' fixed points (and their keys and values
        in every head block) do not change when a token is appended. Each f-evaluation
        crops the head caches back to the solved prefix and appends the new positions'
        keys and values; one last evaluation at y* leaves the caches holding the keys and
        values of the solved state.
        """
        y0 = self.proposal(new_ids, cache.backbone)  # (B, T_new, C)
        f = HeadMap(self.head, y0, cache.head, self.config.solve_unit)
        y, _ = solve(f, f.flat(self.start_point(y0)), self.config.fixed_point.eval_solver)
        f(y)
        return self.decode(y.view_as(y0))
