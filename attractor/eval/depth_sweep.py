"""Quality against inference depth: the solver-depth sweep over the knobs of
docs/method.md section 2.1 (a fixed T, the tolerance), for any model with a depth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from attractor.eval.lm_metrics import WindowSource, evaluate_lm
from attractor.models import LanguageModel, Model

TOLERANCES = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4)


def sweep_depths(t_max: int) -> list[int]:
    """0, 1, 2, 4, 8, ... below t_max, then t_max."""
    depths, t = [0], 1
    while t < t_max:
        depths.append(t)
        t *= 2
    return depths + [t_max] if t_max > 0 else depths


@contextmanager
def eval_tolerance(model: Model, tol: float) -> Iterator[None]:
    """The model's evaluation solver with tol replaced, restored on exit."""
    fixed_point = model.config.fixed_point
    base = fixed_point.eval_solver
    fixed_point.eval_solver = dataclasses.replace(base, tol=tol)
    try:
        yield
    finally:
        fixed_point.eval_solver = base


def depth_sweep(
    model: LanguageModel,
    windows: WindowSource,
    depths: Sequence[int] | None = None,
    tolerances: Sequence[float] = TOLERANCES,
    batch_size: int = 8,
    max_batches: int | None = None,
    bytes_per_token: float | None = None,
    progress: bool = False,
    max_windows: int | None = None,
) -> dict[str, Any]:
    """Quality at fixed depths T (default 0, 1, 2, 4, ... T_max) and, for models with an eval
    solver, at each tolerance with the iterations the solver actually used there."""
    t_max = model.max_depth()
    depths = sweep_depths(t_max) if depths is None else sorted(set(depths))
    kwargs = dict(batch_size=batch_size, max_batches=max_batches, progress=progress)
    kwargs.update(bytes_per_token=bytes_per_token, max_windows=max_windows)
    rows = [{"T": t, **evaluate_lm(model, windows, depth=t, **kwargs)} for t in depths]
    tol_rows = []
    if getattr(model.config, "fixed_point", None) is not None:
        for tol in tolerances:
            with eval_tolerance(model, tol):
                tol_rows.append({"tol": tol, **evaluate_lm(model, windows, **kwargs)})
    return {
        "result": "depth_sweep",
        "kind": model.kind,
        "T_max": t_max,
        "depth": rows,
        "tolerance": tol_rows,
    }
