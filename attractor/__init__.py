"""Attractor: fixed-point refinement of output embeddings, with implicit gradients.

The public names below load on first use, so that `import attractor` (and the command
line's `attractor --help`) does not pay for torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "SolverConfig": "attractor.engine",
    "SolverStats": "attractor.engine",
    "FixedPointConfig": "attractor.engine",
    "solve": "attractor.engine",
    "fixed_point": "attractor.engine",
    "jacobian_penalty": "attractor.engine",
    "spectral_radius": "attractor.engine",
    "build_model": "attractor.models",
    "list_presets": "attractor.models",
    "load_pretrained": "attractor.models",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'attractor' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
