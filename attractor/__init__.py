"""Attractor: fixed-point refinement of output embeddings, with implicit gradients."""

from attractor.implicit import fixed_point, jacobian_penalty, spectral_radius
from attractor.presets import build_model, list_presets
from attractor.pretrained import load_pretrained
from attractor.solvers import SolverConfig, SolverStats, solve

__all__ = [
    "SolverConfig",
    "SolverStats",
    "build_model",
    "fixed_point",
    "jacobian_penalty",
    "list_presets",
    "load_pretrained",
    "solve",
    "spectral_radius",
]
