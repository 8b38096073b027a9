"""What the two Muons share: a torch optimizer of 2-D weights only, stepped one weight at a
time.

`MatrixOptimizer` checks every parameter group it is given (a tensor that is not a matrix is
one error naming its shape) and follows `torch.optim.Optimizer.step`'s closure protocol; a
subclass writes `_update(p, group)`, the step of one weight. `closure_loss` is the protocol
alone, for the optimizers that step more than matrices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def closure_loss(closure: Callable[[], Tensor] | None) -> Tensor | None:
    """`torch.optim.Optimizer.step`'s closure protocol: re-evaluate the loss with autograd."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class MatrixOptimizer(torch.optim.Optimizer):
    """An optimizer of 2-D weights (what a Muon orthogonalises): `step` calls the subclass's
    `_update(p, group)` on every weight that has a gradient."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if p.dim() != 2:
                raise ValueError(
                    f"{type(self).__name__}: only 2-D weights, got a parameter of shape "
                    f"{tuple(p.shape)}; give embeddings, norms, gates and biases to AdamW"
                )
        super().add_param_group({**param_group, "params": params})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = closure_loss(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: Tensor, group: dict[str, Any]) -> None:
        """One step of the weight `p` with the hyperparameters of its `group`."""
        raise NotImplementedError
