"""The run config: nested dataclasses, read from YAML, changed with `--set a.b=v`.

A run is a `RunConfig`: which model (a preset plus field overrides), which data, the
optimizer, the schedule and the loop. Every value is checked against its type hint by the
one typed loader (`attractor.core.typed_config`) when the config loads, the model's
overrides included: a wrong type, a value outside its choices or an unknown key is one line
that names the key, the value and what is allowed.

Configs ship with the package (`attractor/configs/*.yaml`) and can be named without a path:
`load_config("sudoku6-cpu")`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from attractor.core.typed_config import (
    ConfigError,
    apply_assignments,
    from_data,
    merge,
    to_data,
    validate,
)
from attractor.train.optim import OptimConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class ModelSpec:
    """A preset name and the config fields to change (e.g. {"vocab_size": 256}; nested
    fields as mappings: {"fixed_point": {"eval_solver": {"tol": 1e-3}}}). With init_from
    (a model directory, ours or the paper's release format, or hf:OWNER/NAME) the run
    fine-tunes that model: its own config with the overrides on top, its weights loaded;
    the preset is then not used. kind_overrides[kind] applies to a model of that kind only
    (e.g. {"attractor": {"gate_max": 0.75}}), with `overrides` merged over it."""

    preset: str = "attractor-cpu"
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    # model kind -> overrides for a model of that kind only, under `overrides` (so that
    # one config serves several kinds: `--set model.preset=gpt-cpu`)
    kind_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class DataConfig:
    """The data: a corpus cut into windows of seq_len + 1 tokens (language models), or a
    puzzle split directory made by `attractor data puzzles` (grid models)."""

    source: str = "pydoc"  # pydoc (byte level) | synthetic | token shards | a puzzle split
    seq_len: int = 128  # language models
    batch_size: int = 16  # sequences or puzzles per micro-batch per process
    val_fraction: float = 0.1  # of the documents, chosen deterministically
    augment: bool = True  # puzzles: a fresh validity-preserving augmentation per epoch
    # puzzles: 0 augments afresh each epoch; N > 0 gives each puzzle a fixed pool of N
    # augmentations plus the original, one drawn per epoch (the paper's data: 1000 for
    # Sudoku, 7 for mazes, their 8 dihedral versions; `attractor.data.puzzles`)
    augment_pool: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        validate(self)
        if self.seq_len < 1 or self.batch_size < 1:
            raise ValueError("data: seq_len and batch_size must be at least 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data: val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.augment_pool < 0:
            raise ValueError(
                f"data: augment_pool must be >= 0 (0: a fresh augmentation each epoch), got "
                f"{self.augment_pool}"
            )


@dataclass
class ScheduleConfig:
    """Learning-rate factor over training: warm-up, then the shape.

    trapezoid: constant, then linear decay to 0 over the last ``decay_fraction`` (paper).
    cosine: cosine decay to ``min_factor``. constant: constant.
    """

    kind: Literal["trapezoid", "cosine", "constant"] = "trapezoid"
    warmup_steps: int = 0
    decay_fraction: float = 0.5
    min_factor: float = 0.0

    def __post_init__(self) -> None:
        validate(self)
        if self.warmup_steps < 0 or not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError("schedule: need warmup_steps >= 0 and 0 <= decay_fraction <= 1")


@dataclass
class LoopConfig:
    """The training loop."""

    steps: int = 100
    time_budget_s: float = 0.0  # > 0: also stop after this many seconds of training steps
    grad_accum: int = 1
    grad_clip: float = 1.0  # 0 disables clipping
    eval_every: int = 50
    eval_batches: int = 8
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end
    ema_decay: float = 0.0  # 0 disables the EMA weights
    max_bad_steps: int = 5  # stop after this many non-finite steps in a row
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    strategy: Literal["none", "ddp", "fsdp"] = "none"
    out_dir: str = "runs/default"
    progress: bool = True
    compile: bool = False  # torch.compile each transformer block (attractor.train.compile)

    def __post_init__(self) -> None:
        validate(self)
        if self.steps < 0 or self.grad_accum < 1 or self.log_every < 1:
            raise ValueError("train: need steps >= 0, grad_accum >= 1 and log_every >= 1")


@dataclass
class RunConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        validate(self)
        check_model(self.model)


def check_model(spec: ModelSpec) -> None:
    """The preset exists and its overrides fit its config (names, types, choices); each
    override is kept as the value it loads as ('5e-1' -> 0.5). With init_from, the
    overrides must fit the imported language model's config."""
    from attractor.models import config_with

    _fold_kind_overrides(spec)
    if spec.init_from is not None:
        spec.overrides = _as_loaded(spec.overrides, to_data(_imported_config(spec)))
        return
    if spec.preset not in _presets():
        raise ConfigError(
            f"model.preset: unknown preset {spec.preset!r}; choose one of {', '.join(_presets())}"
        )
    config = config_with(spec.preset, spec.overrides, "model.overrides")
    spec.overrides = _as_loaded(spec.overrides, to_data(config))


def _fold_kind_overrides(spec: ModelSpec) -> None:
    """Check every kind_overrides entry against its kind's config, and merge the one of
    this model's kind under spec.overrides."""
    from attractor.models import (
        PRESETS,
        CheckpointError,
        family,
        make_config,
        pretrained_config,
    )
    from attractor.models.registry import kind_of

    for kind, fields in spec.kind_overrides.items():
        where = f"model.kind_overrides.{kind}"
        try:
            family(kind)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
        if not isinstance(fields, Mapping):
            raise ConfigError(f"{where}: expected a mapping of config fields, got {fields!r}")
        try:
            make_config(kind, **fields)
        except (ConfigError, ValueError, TypeError) as err:
            raise ConfigError(f"{where}: {err}") from None
    kind = PRESETS[spec.preset][0] if spec.preset in PRESETS else None
    if spec.init_from is not None and spec.kind_overrides:
        try:
            kind = kind_of(pretrained_config(spec.init_from))
        except CheckpointError:  # _imported_config reports it
            kind = None
    if kind in spec.kind_overrides:
        spec.overrides = merge(spec.kind_overrides[kind], spec.overrides)


def _imported_config(spec: ModelSpec) -> Any:
    """The config of the model named by model.init_from, with the overrides merged."""
    from attractor.models import CheckpointError, LanguageModel, family, pretrained_config
    from attractor.models.pretrained import with_overrides
    from attractor.models.registry import kind_of

    try:
        config = pretrained_config(spec.init_from)
    except CheckpointError as e:
        raise ConfigError(f"model.init_from: {e}") from None
    if not issubclass(family(kind_of(config))[0], LanguageModel):
        raise ConfigError(
            f"model.init_from: {spec.init_from} holds a {kind_of(config)} grid model; "
            "fine-tuning from imported weights takes a language model"
        )
    return with_overrides(config, spec.overrides, "model.overrides")


def _as_loaded(overrides: Mapping[str, Any], loaded: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with every value replaced by the one the loaded config holds at its key
    (nested mappings key by key)."""
    return {
        key: _as_loaded(value, loaded[key])
        if isinstance(value, Mapping) and isinstance(loaded[key], dict)
        else loaded[key]
        for key, value in overrides.items()
    }


def _presets() -> list[str]:
    from attractor.models import list_presets

    return list_presets()


def named_configs() -> list[str]:
    """The configs that ship with the package, by name."""
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def config_path(name: str | Path) -> Path:
    """A YAML file: `name` itself when it is a file, else the packaged config of that name
    (`sudoku6-cpu` or `sudoku6-cpu.yaml`)."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = CONFIGS / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if path.parent == Path(".") and packaged.is_file():
        return packaged
    raise ConfigError(
        f"config: {name} is neither a YAML file nor a packaged config; pass a path or one of "
        f"{', '.join(named_configs())}"
    )


def load_config(path: str | Path | None = None, sets: list[str] | None = None) -> RunConfig:
    """RunConfig from a YAML file or packaged config name (or the defaults) with `--set`
    overrides applied; every key and value checked."""
    data: dict[str, Any] = {}
    if path is not None:
        path = config_path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config: {path} is not valid YAML ({err})") from None
    return from_data(RunConfig, apply_assignments(data, sets or []))
