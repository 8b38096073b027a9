"""GPT-style weight initialisation for every model of the package."""

from __future__ import annotations

from torch import nn

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
