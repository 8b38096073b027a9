"""Training FLOPs per token, counted from the iterations a step actually ran.

Matrix multiplies only (the usual 6N accounting: a forward costs 2 FLOPs per weight per
token, a backward twice that), plus attention scores and values, 4 * S * d per token and
layer for S keys; causal attention over a sequence of T tokens averages S = (T + 1) / 2.
Embedding lookups, norms and elementwise work are left out.

    attractor:  3 (F_backbone + F_head + F_unembed) + n * F_head
                (the solve's n iterations run without a graph; one recorded application of
                the head and the backbone are backpropagated: onestep)
    gpt:        3 (F_blocks + F_unembed)
    looped:     3 (F_prelude + k F_recurrent + F_coda + F_unembed) + (T - k) F_recurrent
"""

from __future__ import annotations

from typing import Any

from torch import nn

from attractor.models.base import LanguageModel


def block_flops(config: Any, seq_len: int, attention: bool = True) -> float:
    """Forward FLOPs per token of one pre-norm block of a model config: its weights, and
    (with ``attention``) causal attention scores and values over seq_len tokens."""
    c = config
    head_dim = c.dim // c.n_heads
    kv_dim = (getattr(c, "n_kv_heads", None) or c.n_heads) * head_dim
    hidden = c.mlp_ratio * c.dim
    mlp_mats = 3 if c.mlp == "swiglu" else 2
    weights = 2 * c.dim * c.dim + 2 * c.dim * kv_dim + mlp_mats * c.dim * hidden
    keys = (seq_len + 1) / 2 if attention else 0.0
    return 2.0 * weights + 4.0 * keys * c.dim


def _linear_flops(module: nn.Module) -> float:
    """Forward FLOPs per token of the plain Linear layers directly outside blocks."""
    return 2.0 * sum(m.in_features * m.out_features for m in module.modules()
                     if isinstance(m, nn.Linear))  # fmt: skip


def train_flops_per_token(
    model: LanguageModel,
    seq_len: int,
    solver_iters: float = 0.0,
    depth: float | None = None,
    attention: bool = True,
) -> float:
    """FLOPs of one training step per token: forward and backward as the model runs them.

    solver_iters: iterations the attractor's (or DEQ's) solve took; depth: the looped
    model's recurrences T in that step (its mean depth when not given); attention=False
    leaves out the attention scores and values (weights only).
    """
    c = model.config
    block = block_flops(c, seq_len, attention)
    unembed = 2.0 * c.dim * c.vocab_size
    if model.kind == "gpt":
        return 3.0 * (c.n_layers * block + unembed)
    if model.kind == "attractor":
        head = c.n_head_layers * block + (_linear_flops(model.head.mix) if model.head.mix else 0)
        return 3.0 * (c.n_backbone * block + head + unembed) + solver_iters * head
    if model.kind == "deq":
        f = c.n_layers * block
        return 3.0 * (f + unembed) + solver_iters * f
    if model.kind == "looped":
        t = c.mean_depth if depth is None else depth
        k = min(c.backprop_depth, t)
        recurrent = c.n_recurrent * block
        injection = 2.0 * c.dim * c.dim  # B e, once a forward
        graph = (c.n_prelude + c.n_coda) * block + injection + k * recurrent + unembed
        return 3.0 * graph + (t - k) * recurrent
    raise ValueError(f"flops: no count for model kind {model.kind!r}")
