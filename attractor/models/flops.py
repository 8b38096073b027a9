"""Counting a training step's FLOPs from what it ran (docs/method.md section 3).

Matrix multiplies only, the usual 6N accounting: a forward costs 2 FLOPs per weight per
token and a backward twice that; attention scores and values add 4 * S * d per token and
layer for S keys. Embedding lookups, norms and elementwise work are left out. The model
classes compose these pieces in their `train_flops`.
"""

from __future__ import annotations

from attractor.engine import FixedPointConfig, SolverStats


def implicit_flops(
    fixed_point: FixedPointConfig, stats: SolverStats, solve: float, f: float
) -> float:
    """FLOPs of a differentiable solve whose map costs `f` forward FLOPs: `solve` FLOPs of
    iterations without a graph, then what the backward records and runs:

        jfb, neumann, adjoint   one recorded application of f, backpropagated: 3 f
        phantom (k steps)       k recorded applications: 3 k f
        neumann, adjoint        one more application when the hook fires, and one
                                input-only vector-Jacobian product (f each: autograd skips
                                the weight gradients) per Neumann term or adjoint iteration

    ``stats.backward_iters`` holds those products once backward has run."""
    steps = fixed_point.backward_steps if fixed_point.backward == "phantom" else 1
    recorded = 3.0 * steps * f
    hook = 0.0 if stats.backward_iters is None else (1 + stats.backward_iters) * f
    return solve + recorded + hook
