"""The registry of model families: kind -> (model class, config class).

A leaf: it imports nothing of the package. Each model module registers its family when it
is imported (`@register("gpt", GPTConfig)` on the class); `attractor.models` imports every
model module, so any code that imports a module of this package finds every kind here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

C = TypeVar("C", bound=type)

KINDS: dict[str, tuple[type, type]] = {}


def register(kind: str, config_cls: type) -> Callable[[C], C]:
    """Class decorator: record `kind` -> (the class, `config_cls`) and set ``cls.kind``."""

    def add(cls: C) -> C:
        """Register cls under kind."""
        if kind in KINDS and KINDS[kind][0] is not cls:
            raise ValueError(f"model registry: kind {kind!r} is registered twice")
        cls.kind = kind
        KINDS[kind] = (cls, config_cls)
        return cls

    return add


def family(kind: str) -> tuple[type, type]:
    """(model class, config class) of `kind`; an unknown kind is an error naming the known."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    return KINDS[kind]


def kind_of(config: Any) -> str:
    """The kind whose config class is exactly type(config)."""
    for kind, (_, config_cls) in KINDS.items():
        if type(config) is config_cls:
            return kind
    raise ValueError(f"no model family takes a {type(config).__name__}")
