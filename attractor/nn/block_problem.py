"""A fixed-point problem from one gated transformer block, for demos and benchmarks:
f(y) = y0 + D(y + y0), the attractor head's map at initialisation."""

from __future__ import annotations

import torch
from torch import Tensor

from attractor.engine import Map, SolverConfig, solve
from attractor.nn.attractor_head import AttractorHead
from attractor.nn.init import init_weights


def block_problem(
    batch: int = 8,
    seq: int = 256,
    dim: int = 256,
    n_heads: int = 4,
    std: float = 0.05,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[Map, Tensor]:
    """f(y) = y0 + D(y + y0) for one causal gated pre-norm block from a fixed seed, and y0.

    ``std`` is the weight scale at initialisation; 0.05 gives a map that contracts by about
    a half per step, a typical value for a freshly initialised head.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = AttractorHead(dim, n_heads, 4 * dim).to(dtype)
    init_weights(head, std=std)
    head.requires_grad_(False)
    y0 = torch.randn(batch, seq, dim, generator=gen).to(dtype)
    return (lambda y: head(y, y0)), y0


def residual_traces(
    batch: int = 4, seq: int = 64, dim: int = 128, tol: float = 1e-6, max_iter: int = 150
) -> dict[str, list[float]]:
    """Max relative residual per iteration of Picard and Anderson on one block problem.

    The weights are drawn at std 0.08, where Picard contracts by only about 0.87 a step.
    """
    f, y0 = block_problem(batch, seq, dim, std=0.08, dtype=torch.float64)
    traces = {}
    for method in ("picard", "anderson"):
        _, stats = solve(f, y0, SolverConfig(method, tol=tol, max_iter=max_iter))
        traces[method] = stats.trace
    return traces
