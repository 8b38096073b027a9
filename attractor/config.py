"""The one config system: nested dataclasses, read from YAML, changed with `--set a.b=v`.

A run is a `RunConfig`: which model (a preset plus field overrides), which data, the
optimizer, the schedule and the loop. Unknown keys are errors that list the valid ones.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from attractor.train.optim import OptimConfig


@dataclass
class ModelSpec:
    """A preset name and the config fields to change (e.g. {"vocab_size": 256})."""

    preset: str = "attractor-cpu"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """The data: a corpus cut into windows of seq_len + 1 tokens (language models), or a
    puzzle split directory made by `attractor data puzzles` (grid models)."""

    source: str = "pydoc"  # pydoc (byte level) | synthetic | token shards | a puzzle split
    seq_len: int = 128  # language models
    batch_size: int = 16  # sequences or puzzles per micro-batch per process
    val_fraction: float = 0.1  # of the documents, chosen deterministically
    augment: bool = True  # puzzles: a fresh validity-preserving augmentation per epoch
    seed: int = 0


@dataclass
class ScheduleConfig:
    """Learning-rate factor over training: warm-up, then the shape.

    trapezoid: constant, then linear decay to 0 over the last ``decay_fraction`` (paper).
    cosine: cosine decay to ``min_factor``. constant: constant.
    """

    kind: str = "trapezoid"
    warmup_steps: int = 0
    decay_fraction: float = 0.5
    min_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("trapezoid", "cosine", "constant"):
            raise ValueError(
                f"schedule.kind: unknown {self.kind!r}; choose trapezoid, cosine or constant"
            )
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
    device: str = "auto"  # auto | cpu | cuda
    strategy: str = "none"  # none | ddp | fsdp
    out_dir: str = "runs/default"
    progress: bool = True


@dataclass
class RunConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: LoopConfig = field(default_factory=LoopConfig)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys are errors naming valid ones."""
    if not isinstance(data, dict):
        raise ValueError(f"config: {where or 'top level'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"config: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys{' under ' + where if where else ''}: {', '.join(names)}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        path = f"{where}.{name}" if where else name
        kwargs[name] = (
            from_dict(tp, value, path) if _is_dataclass_type(tp) else _coerce(tp, value, path)
        )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config: {where or 'top level'}: {err}") from None


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Floats written as 1e-4 (YAML reads those as strings) and ints given for floats."""
    if tp is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"config: {path} must be a number, got {value!r}") from None
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (values parsed as YAML) to a nested dict, in place."""
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=100")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(path: str | Path | None = None, sets: list[str] | None = None) -> RunConfig:
    """RunConfig from a YAML file (or the defaults) with `--set` overrides applied."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config: {path} does not exist; pass a YAML file from configs/")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config: {path} is not valid YAML ({err})") from None
    return from_dict(RunConfig, apply_overrides(data, sets or []))
