"""Weight initialisation: GPT-style (every model's default) and the paper's scaled
orthogonal one (the paper presets')."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from attractor.nn.attention import Attention
from attractor.nn.mlp import ReLU2MLP, SwiGLU
from attractor.nn.norm import RMSNorm


def init_weights(module: nn.Module, std: float = 0.02, out_std: float | None = None) -> None:
    """Initialise every submodule: Linear and Embedding weights ~ N(0, std^2), biases 0,
    RMSNorm weights 1; output projections (Attention.wo, MLP w2) ~ N(0, out_std^2), e.g.
    out_std = std / sqrt(2 * n_layers) (GPT-2). out_std defaults to std. Gates are untouched."""
    out_std = std if out_std is None else out_std
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, RMSNorm) and m.weight is not None:
            nn.init.ones_(m.weight)
    for m in module.modules():  # second pass: parents come before their children above
        if isinstance(m, Attention):
            nn.init.normal_(m.wo.weight, 0.0, out_std)
        elif isinstance(m, (ReLU2MLP, SwiGLU)):
            nn.init.normal_(m.w2.weight, 0.0, out_std)


# -----------------------------------------------------------------------------
# The paper's initialisation


def scaled_orthogonal_std(width: int) -> float:
    """The std of the paper's initialisation, sqrt(2 / (5 width)) (its "scaled-zero"
    strategy; width = the model dimension)."""
    return math.sqrt(2.0 / (5.0 * width))


@torch.no_grad()
def scaled_orthogonal_(weight: Tensor, std: float) -> Tensor:
    """weight (m, n) <- std sqrt(max(m, n)) Q, Q with orthonormal rows or columns: every
    singular value is std sqrt(max(m, n)) and the entries' root mean square is std."""
    nn.init.orthogonal_(weight)
    return weight.mul_(std * math.sqrt(max(weight.shape)))


def init_scaled_orthogonal(
    module: nn.Module, width: int, iterated: Iterable[nn.Module] = ()
) -> None:
    """The paper's initialisation (its code, github jacobfa/Attractor: init_strategy
    "scaled-zero", init_orthogonal): every Linear and Embedding weight scaled-orthogonal at
    std = sqrt(2 / (5 width)), biases 0, RMSNorm weights 1; every output projection
    (Attention.wo, MLP w2) zero, except inside the `iterated` modules (the maps a solver
    iterates, which would be constant otherwise), where it is truncated normal at the same
    std within 3 std. Gates are untouched; value-embedding tables are the model's to redraw."""
    std = scaled_orthogonal_std(width)
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            scaled_orthogonal_(m.weight, std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, RMSNorm) and m.weight is not None:
            nn.init.ones_(m.weight)
    inside = {id(m) for it in iterated for m in it.modules()}
    for m in module.modules():
        out = _output_projection(m)
        if out is None:
            continue
        if id(m) in inside:
            nn.init.trunc_normal_(out.weight, 0.0, std, -3 * std, 3 * std)
        else:
            nn.init.zeros_(out.weight)


def _output_projection(m: nn.Module) -> nn.Linear | None:
    """The layer that writes `m`'s branch into the residual stream: Attention.wo, an MLP's
    w2; None for any other module."""
    if isinstance(m, Attention):
        return m.wo
    if isinstance(m, (ReLU2MLP, SwiGLU)):
        return m.w2
    return None
