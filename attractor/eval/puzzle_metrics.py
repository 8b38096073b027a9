"""Evaluating a grid-puzzle model on a puzzle set: every supervision step, exact and cell
accuracy, the halting step, and the same against the solver depth T (equilibrium
internalization on puzzles, paper section 5). The scores are those of
`attractor.models.grid_metrics`.
"""

from __future__ import annotations

from typing import Any

from attractor.data.puzzles import PuzzleDataset
from attractor.models.grid import GridModel
from attractor.models.grid_metrics import puzzle_totals, summarize


def evaluate_puzzles(
    model: GridModel,
    data: PuzzleDataset,
    batch_size: int = 100,
    depth: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """`attractor.models.grid_metrics` on the first `limit` puzzles of data (all by default)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        indices = list(range(len(data) if limit is None else min(limit, len(data))))
        totals = puzzle_totals(model, data.batches(indices, batch_size, device), depth)
        result: dict[str, Any] = summarize(totals)
    finally:
        model.train(was_training)
    result["puzzles"] = len(indices)
    return result


def puzzle_depth_sweep(
    model: GridModel,
    data: PuzzleDataset,
    depths: list[int],
    batch_size: int = 100,
    limit: int | None = None,
) -> dict[str, Any]:
    """Metrics at the model's own depth ("full") and with every solve cut to each T in
    `depths` ("depth" rows): the "puzzle_depth" result `attractor plot` draws."""
    full = evaluate_puzzles(model, data, batch_size, None, limit)
    rows = []
    for t in depths if model.depth_unit is not None else []:
        rows.append({"T": t, **evaluate_puzzles(model, data, batch_size, t, limit)})
    return {"result": "puzzle_depth", "kind": model.kind, "full": full, "depth": rows}
