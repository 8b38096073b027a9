"""Attractor: fixed-point refinement of output embeddings, with implicit gradients."""

from attractor.implicit import fixed_point, jacobian_penalty, spectral_radius
from attractor.solvers import SolverConfig, SolverStats, solve

__all__ = [
    "SolverConfig",
    "SolverStats",
    "fixed_point",
    "jacobian_penalty",
    "solve",
    "spectral_radius",
]
