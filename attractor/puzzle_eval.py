"""Evaluating grid-puzzle models: every supervision step, exact and cell accuracy, depth.

`supervise` runs a model over all its supervision steps (TRM evaluates with every step; the
halting head is only read, to report where it would have stopped). `evaluate_puzzles`
reports, for one test set:

- exact_acc: grids whose every cell is right after the last step;
- cell_acc: cells right among those blank in the question (givens are copied for free);
- halt_step: mean supervision step at which the halting logit first turns positive
  (n_sup when it never does), and halt_exact_acc: exact accuracy there;
- solver_iters: mean solver iterations per supervision step (models with a solver).

`steps=T` cuts every solve to exactly T iterations (TRM: T cycles): accuracy against
inference depth (equilibrium internalization on puzzles, paper section 5).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attractor.data.puzzles import PuzzleDataset
from attractor.models.grid import GridModel, GridOutput


def supervision_steps(model: GridModel) -> int:
    """How many supervision steps evaluation runs: n_sup, or 1 without a carried state."""
    return model.config.n_sup if model.recurrent else 1


@torch.no_grad()
def supervise(model: GridModel, inputs: Tensor, steps: int | None = None) -> list[GridOutput]:
    """The output of every supervision step for inputs (B, L), carrying the state."""
    carry, outs = None, []
    for _ in range(supervision_steps(model)):
        out = model(inputs, carry=carry, steps=steps)
        carry = out.carry
        outs.append(out)
    return outs


def batch_metrics(outs: list[GridOutput], inputs: Tensor, labels: Tensor) -> Tensor:
    """Sums over the batch: [puzzles, exact, blank cells right, blank cells, halt step,
    exact at halt, solver iterations (per supervision step, summed), solves]."""
    final = outs[-1].logits.argmax(dim=-1)  # (B, L)
    blank = inputs != labels
    exact = (final == labels).all(dim=-1)
    halted = torch.stack([o.halt_logits > 0 for o in outs] + [torch.ones_like(exact)], dim=1)
    halt_at = halted.float().argmax(dim=1).clamp(max=len(outs) - 1)  # first positive, (B,)
    preds = torch.stack([o.logits.argmax(dim=-1) for o in outs], dim=1)  # (B, S, L)
    at_halt = preds[torch.arange(len(halt_at)), halt_at]
    iters = [o.solver.iters for o in outs if o.solver is not None]
    return torch.tensor(
        [
            len(labels),
            float(exact.sum()),
            float(((final == labels) & blank).sum()),
            float(blank.sum()),
            float((halt_at + 1).sum()),
            float((at_halt == labels).all(dim=-1).sum()),
            float(sum(iters)) * len(labels) / max(len(iters), 1),
            float(len(labels) if iters else 0),
        ],
        dtype=torch.float64,
    )


def summarize(totals: Tensor) -> dict[str, float]:
    """Metrics from `batch_metrics` sums (added over batches and ranks)."""
    n, exact, right, blanks, halt, halt_exact, iters, solves = totals.tolist()
    out = {
        "exact_acc": exact / max(n, 1),
        "cell_acc": right / max(blanks, 1),
        "halt_step": halt / max(n, 1),
        "halt_exact_acc": halt_exact / max(n, 1),
    }
    if solves:
        out["solver_iters"] = iters / solves
    return out


@torch.no_grad()
def puzzle_totals(
    model: GridModel,
    data: PuzzleDataset,
    indices: list[int],
    batch_size: int,
    steps: int | None = None,
) -> Tensor:
    """`batch_metrics` summed over data[indices], in batches."""
    device = next(model.parameters()).device
    totals = torch.zeros(8, dtype=torch.float64)
    for i in range(0, len(indices), batch_size):
        items = [data[j] for j in indices[i : i + batch_size]]
        inputs = torch.stack([it["inputs"] for it in items]).to(device)
        labels = torch.stack([it["labels"] for it in items]).to(device)
        totals += batch_metrics(supervise(model, inputs, steps), inputs, labels)
    return totals


def evaluate_puzzles(
    model: GridModel,
    data: PuzzleDataset,
    batch_size: int = 100,
    steps: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Metrics of the module docstring on the first `limit` puzzles of data (all by default)."""
    was_training = model.training
    model.eval()
    try:
        indices = list(range(len(data) if limit is None else min(limit, len(data))))
        result: dict[str, Any] = summarize(puzzle_totals(model, data, indices, batch_size, steps))
    finally:
        model.train(was_training)
    result["puzzles"] = len(indices)
    return result


def has_depth(model: GridModel) -> bool:
    """Whether `steps=T` means something for this model (a solver or TRM's cycles)."""
    return model.kind in ("reasoner", "trm", "grid_attractor")


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
    for t in depths if has_depth(model) else []:
        rows.append({"T": t, **evaluate_puzzles(model, data, batch_size, t, limit)})
    return {"result": "puzzle_depth", "kind": model.kind, "full": full, "depth": rows}
