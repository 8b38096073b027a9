"""The fixed-point engine: root solvers and implicit gradients (docs/method.md sections 2.2, 2.3).

Layer 1: imports only `attractor.core` and torch.
"""

from attractor.engine.fixed_point_config import FixedPointConfig
from attractor.engine.implicit import BACKWARDS, fixed_point, jacobian_penalty, spectral_radius
from attractor.engine.solve import solve, solve_with_preimage
from attractor.engine.solver_config import METHODS, PAPER_LM_SOLVE, Map, SolverConfig, SolverStats

__all__ = [
    "BACKWARDS",
    "METHODS",
    "FixedPointConfig",
    "Map",
    "SolverConfig",
    "SolverStats",
    "PAPER_LM_SOLVE",
    "fixed_point",
    "jacobian_penalty",
    "solve",
    "solve_with_preimage",
    "spectral_radius",
]
