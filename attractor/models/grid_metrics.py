"""What a grid model's supervision steps score: exact and cell accuracy, the halting step.

`supervise` runs a model over all its supervision steps (TRM evaluates with every step; the
halting head is only read, to report where it would have stopped); `batch_metrics` sums a
batch's scores and `summarize` turns sums (over batches and ranks) into:

- exact_acc: grids whose every cell is right after the last step;
- cell_acc: cells right among those blank in the question (givens are copied for free;
  mazes: the path cells);
- cell_acc_all: cells right among all cells, givens included (the "accuracy" the paper's
  puzzle code and TRM report);
- halt_step: mean supervision step at which the halting logit first turns positive
  (n_sup when it never does), and halt_exact_acc: exact accuracy there;
- solver_iters: mean solver iterations per supervision step (models with a solver).

`depth=T` cuts every solve to exactly T iterations (TRM: T cycles).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from attractor.models.grid import GridModel, GridOutput


def supervision_steps(model: GridModel) -> int:
    """How many supervision steps evaluation runs: n_sup, or 1 without a carried state."""
    return model.config.n_sup if model.recurrent else 1


@torch.no_grad()
def supervise(model: GridModel, inputs: Tensor, depth: int | None = None) -> list[GridOutput]:
    """The output of every supervision step for inputs (B, L), carrying the state."""
    carry, outs = None, []
    for _ in range(supervision_steps(model)):
        out = model(inputs, carry=carry, depth=depth)
        carry = out.carry
        outs.append(out)
    return outs


def batch_metrics(outs: list[GridOutput], inputs: Tensor, labels: Tensor) -> Tensor:
    """Sums over the batch: [puzzles, exact, blank cells right, blank cells, halt step,
    exact at halt, solver iterations (per supervision step, summed), solves, cells right,
    cells]."""
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
            float((final == labels).sum()),
            float(labels.numel()),
        ],
        dtype=torch.float64,
    )


def summarize(totals: Tensor) -> dict[str, float]:
    """Metrics from `batch_metrics` sums (added over batches and ranks)."""
    n, exact, right, blanks, halt, halt_exact, iters, solves, right_all, cells = totals.tolist()
    out = {
        "exact_acc": exact / max(n, 1),
        "cell_acc": right / max(blanks, 1),
        "cell_acc_all": right_all / max(cells, 1),
        "halt_step": halt / max(n, 1),
        "halt_exact_acc": halt_exact / max(n, 1),
    }
    if solves:
        out["solver_iters"] = iters / solves
    return out


@torch.no_grad()
def puzzle_totals(
    model: GridModel, batches: Iterable[tuple[Tensor, Tensor]], depth: int | None = None
) -> Tensor:
    """`batch_metrics` summed over (inputs, labels) batches."""
    totals = torch.zeros(10, dtype=torch.float64)
    for inputs, labels in batches:
        totals += batch_metrics(supervise(model, inputs, depth), inputs, labels)
    return totals
