"""What every model has, language model or grid model: its config, its parameter counts,
saving, and the answers a trainer or an evaluator asks of it.

A model family subclasses `Model` (through `LanguageModel` or `GridModel`) and answers for
itself:
- `depth_unit`: what its inference depth counts ("solver iterations", "recurrences",
  "cycles"), or None for a fixed-depth model; `max_depth()`: its T_max;
- `train_flops(out, shape)`: the FLOPs of the training step that produced `out` from
  inputs of `shape`, counted from the iterations that step actually ran
  (docs/method.md section 3);
- `layout()`: a one-line description ("attractor 7+1x1024 h8 ffn4096 anderson T6-64").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from attractor.core.typed_config import to_data
from attractor.engine import SolverConfig


class Model(nn.Module):
    """Base class: `config` is the model's dataclass; `kind` names the family (set by
    `attractor.models.registry.register`)."""

    kind: str = ""
    config: Any
    depth_unit: str | None = None

    def max_depth(self) -> int:
        """T_max, the deepest fixed depth this model can be run at."""
        raise ValueError(
            f"a {self.kind} model has a fixed depth: there is no solver depth or recurrence "
            "to set; use a model with a solver, a recurrence or cycles"
        )

    def train_flops(self, out: Any, shape: tuple[int, ...], attention: bool = True) -> float:
        """FLOPs of the training forward and backward that produced `out` from inputs of
        `shape`; attention=False counts the weight matrices only."""
        raise NotImplementedError

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (shared tensors once); optionally without embedding tables."""
        params = {id(p): p for p in self.parameters()}
        if non_embedding:
            for m in self.modules():
                if isinstance(m, nn.Embedding):
                    params.pop(id(m.weight), None)
        return sum(p.numel() for p in params.values())

    def config_dict(self) -> dict[str, Any]:
        """{"kind": ..., **config}: what config.json holds."""
        return {"kind": self.kind, **to_data(self.config)}

    def save_pretrained(self, directory: str) -> None:
        """Write config.json and model.safetensors to directory (attractor.models.pretrained)."""
        from attractor.models.pretrained import save_pretrained

        save_pretrained(self, directory)

    def layout(self) -> str:
        """A short description from the config's shape fields, e.g. "gpt 6x768 h6 ffn3072"."""
        return describe(self.kind, self.config)


_LAYER_FIELDS = ("n_layers", "n_backbone", "n_head_layers", "n_prelude", "n_recurrent", "n_coda")


def describe(kind: str, config: Any) -> str:
    """A short layout from whichever common shape fields the config has:
    "gpt 6x768 h6 ffn3072", "attractor 7+1x1024 h8 ffn4096 anderson T6-64 tol0.0003 per
    sequence" (a solve per sequence is named; one per position, the default, is not)."""
    names = {f.name for f in dataclasses.fields(config)}
    layers = "+".join(str(getattr(config, f)) for f in _LAYER_FIELDS if f in names)
    parts = [kind, f"{layers}x{config.dim}" if layers else f"d{config.dim}", f"h{config.n_heads}"]
    parts.append(f"ffn{config.mlp_hidden()}" + ("" if config.mlp == "relu2" else f" {config.mlp}"))
    fixed_point = getattr(config, "fixed_point", None)
    if fixed_point is not None:
        s: SolverConfig = fixed_point.eval_solver
        parts.append(f"{s.method} T{s.min_iter}-{s.max_iter} tol{s.tol:g}")
    if getattr(config, "solve_unit", "position") == "sequence":
        parts.append("per sequence")  # one solver sample a sequence, the paper code's solve
    return " ".join(parts)
