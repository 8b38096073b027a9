"""Compiled blocks (`train.compile=true`): `torch.compile` on each transformer block.

Every `attractor.nn.Block` (the backbones' blocks, the attractor head's gated blocks, the
baselines' and the grid models' blocks) gets a compiled forward; everything around them
stays eager: the solver loop (its host reads and data-dependent stopping), the
implicit-gradient hooks (which `torch.compile` cannot trace through), embeddings, decode
and loss. The blocks carry no hooks of their own, so each compiles to one graph; a head
solve that runs on a subset of sequences changes the batch size, which the compiler then
treats as dynamic.

A block that fails to compile (no C++ toolchain for inductor, an unsupported op) is not an
error: the first failure prints one warning line and every block runs eager from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from attractor.nn import Block

LOG = logging.getLogger("attractor.train.compile")


class _Fallback:
    """Shared by the compiled blocks of one model: whether compiling has failed."""

    def __init__(self) -> None:
        self.failed = False

    def fail(self, error: BaseException) -> None:
        """Turn every block eager, with one warning line naming the error."""
        self.failed = True
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        LOG.warning(
            "train.compile: torch.compile failed (%s: %s); the blocks run eager",
            type(error).__name__,
            reason,
        )


class _CompiledForward:
    """A block's forward: the compiled one, or the eager one once compiling has failed."""

    def __init__(self, eager: Callable[..., Any], fallback: _Fallback, **options: Any) -> None:
        self.eager, self.fallback = eager, fallback
        self.compiled = torch.compile(eager, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fallback.failed:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as error:  # compile errors have no common base class
            out = self.eager(*args, **kwargs)  # a real error in the block raises here
            self.fallback.fail(error)
            return out


def compile_blocks(model: nn.Module, **options: Any) -> int:
    """Compile the forward of every `Block` in `model` in place (`torch.compile` options
    pass through); returns how many. The state dict and parameters are untouched."""
    fallback = _Fallback()
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for block in blocks:
        block.forward = _CompiledForward(block.forward, fallback, **options)
    return len(blocks)


def compiled_blocks_failed(model: nn.Module) -> bool:
    """True when `model`'s blocks were compiled and compiling has failed (they run eager)."""
    for m in model.modules():
        forward = m.__dict__.get("forward")
        if isinstance(forward, _CompiledForward):
            return forward.fallback.failed
    return False
