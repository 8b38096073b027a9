"""Which optimizer group a module's parameters belong to, declared by the module itself.

The training recipe (Muon for hidden matrices, AdamW for the rest, the attractor head on
AdamW at its own learning rate, TRM's puzzle embedding on sign descent) needs to know what
each parameter is. Rather than have the
optimizer name model classes, a module declares its group:

    class AttractorHead(nn.Module):
        optim_group = "head"                      # a class: every instance
    set_optim_group(nn.Linear(d, vocab), "adamw")  # one instance

A parameter belongs to the group of the nearest enclosing module that declares one; with
none declared, an embedding table is "embed", the 2-D weight of a Linear is "muon" and
everything else (norms, gates, biases, vectors) is "adamw".
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

GROUPS = ("muon", "adamw", "embed", "head", "signsgd")

M = TypeVar("M", bound=nn.Module)


def set_optim_group(module: M, group: str) -> M:
    """Declare that every parameter under `module` belongs to optimizer group `group`."""
    if group not in GROUPS:
        raise ValueError(f"optim group: unknown {group!r}; choose one of {', '.join(GROUPS)}")
    module.optim_group = group
    return module


def declared_group(module: nn.Module) -> str | None:
    """The group `module` declares for its parameters, or None."""
    return getattr(module, "optim_group", None)


def default_group(module: nn.Module, name: str) -> str:
    """The group of parameter `name` of `module` when no enclosing module declares one."""
    if isinstance(module, nn.Embedding):
        return "embed"
    if isinstance(module, nn.Linear) and name == "weight":
        return "muon"
    return "adamw"
