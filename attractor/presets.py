"""The one registry of model families and named presets (DESIGN.md section 3).

`build_model(name)` builds any preset; `build_model(kind=..., **fields)` any config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from attractor.models.attractor import AttractorConfig, AttractorLM
from attractor.models.base import LanguageModel
from attractor.models.deq import DEQ, DEQConfig
from attractor.models.gpt import GPT, GPTConfig
from attractor.models.grid_attractor import GridAttractor, GridAttractorConfig
from attractor.models.grid_transformer import GridTransformer, GridTransformerConfig
from attractor.models.looped import LoopedConfig, LoopedLM
from attractor.models.reasoner import Reasoner, ReasonerConfig
from attractor.models.trm import TRM, TRMConfig
from attractor.solvers import SolverConfig

# kind -> (model class, config dataclass)
KINDS: dict[str, tuple[type[LanguageModel], type]] = {
    "attractor": (AttractorLM, AttractorConfig),
    "gpt": (GPT, GPTConfig),
    "looped": (LoopedLM, LoopedConfig),
    "deq": (DEQ, DEQConfig),
    "reasoner": (Reasoner, ReasonerConfig),
    "trm": (TRM, TRMConfig),
    "grid_transformer": (GridTransformer, GridTransformerConfig),
    "grid_attractor": (GridAttractor, GridAttractorConfig),
}


def _solver(max_iter: int, min_iter: int, tol: float, mixing: float = 1.0) -> SolverConfig:
    """The attractor's solver: Anderson, every position stopping on its own residual."""
    return SolverConfig(
        "anderson",
        tol=tol,
        max_iter=max_iter,
        min_iter=min_iter,
        mixing=mixing,
        freeze_converged=True,
    )


def _attractor(dim: int, heads: int, backbone: int, head: int, solver: SolverConfig) -> dict:
    return dict(
        dim=dim,
        n_heads=heads,
        n_backbone=backbone,
        n_head_layers=head,
        train_solver=solver,
        eval_solver=solver,
    )


def _grid_cpu_presets() -> dict[str, tuple[str, dict[str, Any]]]:
    """Small grid models for 2 CPU cores with 2-D structural positions, parameter-matched:
    the recursive nets have 2 blocks, the one-pass models 2 blocks (1 + 1 for the attractor)."""
    small = dict(dim=128, n_heads=4, positions="2d", n_sup=8)
    solver = SolverConfig("anderson", tol=1e-2, max_iter=6, min_iter=2)
    return {
        "reasoner-cpu": (
            "reasoner",
            dict(small, n_layers=2, train_solver=solver, eval_solver=solver),
        ),
        "trm-cpu": ("trm", dict(small, n_layers=2)),
        "grid-transformer-cpu": ("grid_transformer", dict(small, n_layers=2)),
        "grid-attractor-cpu": (
            "grid_attractor",
            dict(small, n_backbone=1, n_head_layers=1, train_solver=solver, eval_solver=solver),
        ),
    }


# name -> (kind, config fields); sizes from DESIGN.md section 3, "-cpu" for 2 CPU cores
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "attractor-140m": ("attractor", _attractor(1024, 8, 7, 1, _solver(64, 6, 3e-4))),
    "attractor-370m": ("attractor", _attractor(1280, 10, 15, 2, _solver(64, 8, 2e-4))),
    "attractor-770m": ("attractor", _attractor(1280, 10, 35, 2, _solver(32, 6, 1.5e-4, 0.96))),
    "attractor-cpu": (
        "attractor",
        dict(_attractor(256, 4, 5, 1, _solver(16, 2, 1e-3)), vocab_size=4096, max_seq_len=512),
    ),
    "gpt-140m": ("gpt", dict(dim=768, n_layers=6, n_heads=6)),
    "gpt-370m": ("gpt", dict(dim=1024, n_layers=12, n_heads=8)),
    "gpt-770m": ("gpt", dict(dim=1280, n_layers=18, n_heads=10)),
    "gpt-1.3b": ("gpt", dict(dim=1536, n_layers=24, n_heads=12)),
    "gpt-cpu": ("gpt", dict(vocab_size=4096, dim=256, n_layers=3, n_heads=4, max_seq_len=512)),
    "looped-140m": (
        "looped",
        dict(
            dim=768,
            n_heads=6,
            n_prelude=2,
            n_recurrent=2,
            n_coda=2,
            mean_depth=8.0,
            backprop_depth=4,
        ),
    ),
    "looped-cpu": (
        "looped",
        dict(
            vocab_size=4096,
            dim=256,
            n_heads=4,
            max_seq_len=512,
            n_prelude=1,
            n_recurrent=1,
            n_coda=1,
        ),
    ),
    "deq-140m": ("deq", dict(dim=1024, n_heads=8, n_layers=6)),
    "deq-cpu": ("deq", dict(vocab_size=4096, dim=256, n_heads=4, max_seq_len=512, n_layers=2)),
    # grid puzzles (section 2.3): width 512, 8 heads, SwiGLU; the grid size and vocabulary
    # come from the puzzle split at training time. "-cpu": the same shapes at width 128.
    "reasoner-27m": ("reasoner", dict(n_layers=8)),
    "reasoner-7m": ("reasoner", dict(n_layers=2)),
    "trm-27m": ("trm", dict(n_layers=8)),
    "trm-7m": ("trm", dict(n_layers=2)),
    "grid-transformer-27m": ("grid_transformer", dict(n_layers=8)),
    "grid-attractor-27m": ("grid_attractor", dict(n_backbone=4, n_head_layers=4)),
    **_grid_cpu_presets(),
}


def list_presets() -> list[str]:
    """Every preset name, in registry order."""
    return list(PRESETS)


def make_config(kind: str, **fields: Any) -> Any:
    """The config dataclass of `kind` with `fields`; unknown kinds or fields are errors."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    config_cls = KINDS[kind][1]
    valid = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise ValueError(
            f"{kind}: unknown config field(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(valid))}"
        )
    return config_cls(**fields)


def preset_config(name: str, **overrides: Any) -> Any:
    """The config of preset `name`, with `overrides` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    kind, fields = PRESETS[name]
    return make_config(kind, **{**fields, **overrides})


def model_from_config(config: Any) -> LanguageModel:
    """The one way to build a model: from its config dataclass."""
    for model_cls, config_cls in KINDS.values():
        if type(config) is config_cls:
            return model_cls(config)
    raise ValueError(f"no model family takes a {type(config).__name__}")


def build_model(
    name: str | None = None, *, kind: str | None = None, **fields: Any
) -> LanguageModel:
    """A model from a preset name (fields override the preset) or from kind + fields."""
    if name is not None:
        return model_from_config(preset_config(name, **fields))
    if kind is None:
        raise ValueError("build_model: give a preset name or kind=...")
    return model_from_config(make_config(kind, **fields))
