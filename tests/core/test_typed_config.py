"""The typed config loader: every coercion rule, every error message, the dict helpers."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from attractor.core.typed_config import (
    ConfigError,
    apply_assignments,
    coerce,
    from_data,
    merge,
    to_data,
    validate,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Window:
    """A nested dataclass with its own semantic check."""

    lo: int = 0
    hi: int = 10

    def __post_init__(self) -> None:
        if self.lo > self.hi:
            raise ValueError(f"need lo <= hi, got lo={self.lo}, hi={self.hi}")


@dataclass
class Solver:
    """A config that validates itself, as config dataclasses built in Python do."""

    method: Literal["anderson", "picard"] = "anderson"
    tol: float = 1e-4
    max_iter: int = 32

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class Model:
    gate_init: float = 0.75
    kv_heads: int | None = None
    solver: Solver = field(default_factory=Solver)
    window: Window = field(default_factory=Window)


@dataclass
class Data:
    batch_size: int = 16
    betas: tuple[float, float] = (0.9, 0.95)
    sizes: tuple[int, ...] = ()
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)


@dataclass
class Train:
    steps: int = 100
    time_budget_s: float = 0.0
    progress: bool = True
    strategy: Literal["none", "ddp", "fsdp"] = "none"
    out_dir: str = "runs/default"
    seed: Optional[int] = None  # noqa: UP045 (the typing.Optional spelling on purpose)
    size: int | str = 0


@dataclass
class Run:
    model: Model = field(default_factory=Model)
    data: Data = field(default_factory=Data)
    train: Train = field(default_factory=Train)


@dataclass
class Needs:
    kind: str
    count: int = 1
    cached: int = field(default=0, init=False)


def error(fn: Any, *args: Any) -> str:
    """The ConfigError message `fn(*args)` raises, checked to be one line."""
    with pytest.raises(ConfigError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def load(*assignments: str) -> Run:
    """A Run from `--set` strings, as the CLI builds one."""
    return from_data(Run, apply_assignments({}, list(assignments)))


# -----------------------------------------------------------------------------
# The bug report: values that loaded without complaint


def test_bug_report_steps_abc() -> None:
    assert error(load, "train.steps=abc") == "train.steps: expected an integer, got 'abc'"


def test_bug_report_strategy_zero3() -> None:
    assert (
        error(load, "train.strategy=zero3")
        == "train.strategy: 'zero3' is not one of 'none', 'ddp', 'fsdp'"
    )


def test_bug_report_batch_size_float() -> None:
    assert error(load, "data.batch_size=1.5") == "data.batch_size: expected an integer, got 1.5"


def test_bug_report_progress_maybe() -> None:
    assert (
        error(load, "train.progress=maybe") == "train.progress: expected true or false, got 'maybe'"
    )


def test_bug_report_gate_init_yaml11_string() -> None:
    assert apply_assignments({}, ["model.gate_init=5e-1"]) == {"model": {"gate_init": "5e-1"}}
    cfg = load("model.gate_init=5e-1")
    assert cfg.model.gate_init == 0.5 and type(cfg.model.gate_init) is float


# -----------------------------------------------------------------------------
# coerce, one hint at a time


def test_int() -> None:
    assert coerce(int, 3, "n") == 3
    for bad in (1.5, "3", True, None):
        assert error(coerce, int, bad, "n") == f"n: expected an integer, got {bad!r}"


def test_float() -> None:
    assert coerce(float, 2, "lr") == 2.0 and type(coerce(float, 2, "lr")) is float
    assert coerce(float, 0.5, "lr") == 0.5
    assert coerce(float, "1e-4", "lr") == 1e-4
    assert error(coerce, float, "fast", "optim.lr") == "optim.lr: expected a number, got 'fast'"
    assert error(coerce, float, True, "optim.lr") == "optim.lr: expected a number, got True"
    assert error(coerce, float, [1.0], "optim.lr") == "optim.lr: expected a number, got [1.0]"


def test_bool_and_str() -> None:
    assert coerce(bool, False, "b") is False
    assert error(coerce, bool, 1, "b") == "b: expected true or false, got 1"
    assert error(coerce, bool, "true", "b") == "b: expected true or false, got 'true'"
    assert coerce(str, "cpu", "device") == "cpu"
    assert error(coerce, str, 1, "device") == "device: expected a string, got 1"


def test_any_passes_as_is() -> None:
    value = object()
    assert coerce(Any, value, "x") is value


def test_literal_compares_types() -> None:
    hint = Literal[1, "a"]
    assert coerce(hint, 1, "x") == 1 and coerce(hint, "a", "x") == "a"
    assert error(coerce, hint, True, "x") == "x: True is not one of 1, 'a'"
    assert error(coerce, hint, 1.0, "x") == "x: 1.0 is not one of 1, 'a'"


def test_optional() -> None:
    for hint in (int | None, Optional[int]):  # noqa: UP045
        assert coerce(hint, None, "k") is None
        assert coerce(hint, 4, "k") == 4
        assert error(coerce, hint, "four", "k") == "k: expected an integer, got 'four'"
    assert coerce(float | None, "5e-1", "g") == 0.5


def test_union_first_member_that_fits() -> None:
    assert coerce(int | str, 3, "u") == 3
    assert coerce(int | str, "3", "u") == "3"
    assert coerce(float | str, "5e-1", "u") == 0.5
    assert coerce(str | float, "5e-1", "u") == "5e-1"
    assert coerce(int | bool, True, "u") is True
    assert (
        error(coerce, int | str | None, 1.5, "u")
        == "u: expected an integer or a string or null, got 1.5"
    )


def test_tuple_fixed() -> None:
    hint = tuple[float, int]
    assert coerce(hint, [1, 2], "t") == (1.0, 2)
    assert coerce(hint, (1.5, 2), "t") == (1.5, 2)
    assert error(coerce, hint, [1, 2, 3], "t") == "t: expected a list of 2 items, got [1, 2, 3]"
    assert error(coerce, hint, 3, "t") == "t: expected a list of 2 items, got 3"
    assert error(coerce, hint, [1, 2.5], "t") == "t[1]: expected an integer, got 2.5"


def test_tuple_variadic_and_plain() -> None:
    assert coerce(tuple[int, ...], [1, 2, 3], "t") == (1, 2, 3)
    assert coerce(tuple[int, ...], [], "t") == ()
    assert error(coerce, tuple[int, ...], [1, "x"], "t") == "t[1]: expected an integer, got 'x'"
    assert error(coerce, tuple[int, ...], "12", "t") == "t: expected a list, got '12'"
    assert coerce(tuple, [1, "a"], "t") == (1, "a")


def test_list() -> None:
    assert coerce(list[str], ("a", "b"), "tags") == ["a", "b"]
    assert coerce(list, (1, "a"), "tags") == [1, "a"]
    assert error(coerce, list[str], "ab", "tags") == "tags: expected a list, got 'ab'"
    assert error(coerce, list[str], ["a", 2], "tags") == "tags[1]: expected a string, got 2"


def test_dict() -> None:
    source = {"a": 1, "b": "2.5"}
    out = coerce(dict[str, float], source, "w")
    assert out == {"a": 1.0, "b": 2.5} and out is not source
    assert coerce(dict[str, Any], {"x": [1]}, "w") == {"x": [1]}
    assert coerce(dict, {"x": 1}, "w") == {"x": 1}
    assert error(coerce, dict[str, float], {"a": "x"}, "w") == "w.a: expected a number, got 'x'"
    assert error(coerce, dict[str, Any], {1: "x"}, "w") == "w: keys must be a string, got 1"
    assert error(coerce, dict, {1: "x"}, "w") == "w: keys must be a string, got 1"
    assert error(coerce, dict[str, Any], [1], "w") == "w: expected a mapping, got [1]"


def test_dataclass_hint() -> None:
    window = Window(1, 2)
    assert coerce(Window, window, "model.window") is window
    assert coerce(Window, {"hi": 3}, "model.window") == Window(0, 3)
    assert error(coerce, Model, 3, "model") == "model: expected a mapping of fields, got 3"


def test_other_class_hint() -> None:
    assert coerce(Path, Path("x"), "p") == Path("x")
    assert error(coerce, Path, 3, "p") == "p: expected Path, got 3"


# -----------------------------------------------------------------------------
# from_data


def test_from_data_defaults_and_nesting() -> None:
    assert from_data(Run, {}) == Run()
    cfg = from_data(
        Run,
        {
            "model": {"solver": {"method": "picard", "tol": "1e-6"}, "kv_heads": 2},
            "data": {"betas": [0.8, 0.9], "sizes": [1, 2], "extra": {"k": [1, 2]}},
            "train": {"seed": 3, "time_budget_s": 60},
        },
    )
    assert cfg.model.solver == Solver("picard", 1e-6)
    assert cfg.model.kv_heads == 2
    assert cfg.data.betas == (0.8, 0.9) and cfg.data.sizes == (1, 2)
    assert cfg.data.extra == {"k": [1, 2]}
    assert cfg.train.seed == 3 and cfg.train.time_budget_s == 60.0


def test_from_data_nested_value_error_names_path() -> None:
    assert (
        error(from_data, Run, {"model": {"solver": {"max_iter": 2.0}}})
        == "model.solver.max_iter: expected an integer, got 2.0"
    )


def test_from_data_unknown_key_nested() -> None:
    assert error(from_data, Run, {"train": {"stepz": 1}}) == (
        "train.stepz: unknown key; valid keys under train: "
        "steps, time_budget_s, progress, strategy, out_dir, seed, size"
    )
    assert error(from_data, Run, {"model": {"solver": {"metod": "x", "tl": 1}}}) == (
        "model.solver.metod, model.solver.tl: unknown keys; valid keys under model.solver: "
        "method, tol, max_iter"
    )


def test_from_data_unknown_key_top_level() -> None:
    assert (
        error(from_data, Run, {"trian": {}}) == "trian: unknown key; valid keys: model, data, train"
    )


def test_from_data_init_false_field_is_no_key() -> None:
    assert error(from_data, Needs, {"kind": "a", "cached": 1}) == (
        "cached: unknown key; valid keys: kind, count"
    )


def test_from_data_missing_required_key() -> None:
    assert from_data(Needs, {"kind": "a"}) == Needs("a")
    assert error(from_data, Needs, {"count": 2}) == "kind: missing key, required (no default)"


def test_from_data_needs_a_mapping() -> None:
    assert error(from_data, Run, [1]) == "config: expected a mapping of fields, got [1]"
    assert error(from_data, Run, {"train": None}) == (
        "train: expected a mapping of fields, got None"
    )


def test_from_data_semantic_check_becomes_config_error() -> None:
    message = error(from_data, Run, {"model": {"window": {"lo": 5, "hi": 1}}})
    assert message == "model.window: need lo <= hi, got lo=5, hi=1"
    assert error(from_data, Window, {"lo": 5, "hi": 1}) == "config: need lo <= hi, got lo=5, hi=1"


@dataclass
class Prefixed:
    """A semantic check whose message already names its path, and one of two lines."""

    n: int = 0

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("prefixed.n: must be >= 0")
        if self.n > 9:
            raise ValueError("too big\n  at most 9")


def test_from_data_constructor_message_not_double_prefixed() -> None:
    assert error(from_data, Prefixed, {"n": -1}, "prefixed") == "prefixed.n: must be >= 0"
    assert error(from_data, Prefixed, {"n": 10}, "prefixed") == "prefixed: too big at most 9"


# -----------------------------------------------------------------------------
# validate


def test_validate_normalises_in_post_init() -> None:
    solver = Solver(tol="5e-1")
    assert solver.tol == 0.5 and type(solver.tol) is float
    assert Solver(tol=1).tol == 1.0


def test_validate_errors_name_the_field() -> None:
    assert error(Solver, "newton") == "method: 'newton' is not one of 'anderson', 'picard'"
    assert error(Solver, "picard", 1e-4, 3.5) == "max_iter: expected an integer, got 3.5"


def test_validate_converts_dicts_for_dataclass_fields() -> None:
    model = Model(solver={"method": "picard"})
    validate(model)
    assert model.solver == Solver("picard")
    assert error(validate, Model(window={"lo": 3, "hi": 1})) == (
        "window: need lo <= hi, got lo=3, hi=1"
    )


def test_validate_keeps_nested_instances() -> None:
    solver = Solver()
    model = Model(solver=solver, gate_init=1)
    validate(model)
    assert model.solver is solver and model.gate_init == 1.0


@dataclass(frozen=True)
class Frozen:
    rate: float = 1.0

    def __post_init__(self) -> None:
        validate(self)


def test_validate_frozen_dataclass() -> None:
    assert Frozen("2").rate == 2.0


# -----------------------------------------------------------------------------
# to_data


def test_to_data_round_trip() -> None:
    cfg = from_data(
        Run,
        {
            "model": {"solver": {"method": "picard"}, "window": {"lo": 1}},
            "data": {"betas": [0.5, 0.6], "sizes": [3], "tags": ["a"], "extra": {"t": [1]}},
        },
    )
    data = to_data(cfg)
    assert data["data"]["betas"] == [0.5, 0.6] and data["data"]["sizes"] == [3]
    assert data["model"]["solver"] == {"method": "picard", "tol": 1e-4, "max_iter": 32}
    assert from_data(Run, data) == cfg


def test_to_data_tuples_inside_any_become_lists() -> None:
    assert to_data(Data(extra={"t": (1, (2, 3))}))["extra"] == {"t": [1, [2, 3]]}


def test_to_data_skips_init_false_fields() -> None:
    assert to_data(Needs("a")) == {"kind": "a", "count": 1}


# -----------------------------------------------------------------------------
# merge


def test_merge_deep_without_mutating() -> None:
    base = {"train": {"steps": 1, "seed": 0}, "data": {"tags": ["a"]}, "model": {"x": 1}}
    new = {"train": {"steps": 5}, "model": 3, "extra": {"k": 1}}
    out = merge(base, new)
    assert out == {
        "train": {"steps": 5, "seed": 0},
        "data": {"tags": ["a"]},
        "model": 3,
        "extra": {"k": 1},
    }
    assert base == {"train": {"steps": 1, "seed": 0}, "data": {"tags": ["a"]}, "model": {"x": 1}}
    assert new == {"train": {"steps": 5}, "model": 3, "extra": {"k": 1}}


def test_merge_result_shares_no_containers() -> None:
    base = {"data": {"tags": ["a"]}}
    new = {"extra": {"k": 1}}
    out = merge(base, new)
    apply_assignments(out, ["data.seed=1", "extra.k=2"])
    out["data"]["tags"].append("b")
    assert base == {"data": {"tags": ["a"]}} and new == {"extra": {"k": 1}}


# -----------------------------------------------------------------------------
# apply_assignments


def test_apply_assignments_creates_sections_and_parses_yaml() -> None:
    data = {"train": {"steps": 1}}
    out = apply_assignments(
        data,
        ["train.steps=100", "model.solver.tol=1.0e-4", "data.tags=[a, b]", "x.flag=true", "y="],
    )
    assert out is data
    assert data == {
        "train": {"steps": 100},
        "model": {"solver": {"tol": 1e-4}},
        "data": {"tags": ["a", "b"]},
        "x": {"flag": True},
        "y": None,
    }
    assert apply_assignments({}, ["a=b=c"]) == {"a": "b=c"}


def test_apply_assignments_malformed() -> None:
    expected = "expected KEY=VALUE, e.g. train.steps=100"
    for item in ("foo", "=1", "a..b=1", ".a=1"):
        assert error(apply_assignments, {}, [item]) == f"--set {item!r}: {expected}"


def test_apply_assignments_not_a_section() -> None:
    assert error(apply_assignments, {"train": {"steps": 5}}, ["train.steps.x=1"]) == (
        "--set 'train.steps.x=1': train.steps is not a section"
    )


def test_apply_assignments_bad_yaml() -> None:
    message = error(apply_assignments, {}, ["data.tags=[a,"])
    assert message.startswith("--set 'data.tags=[a,': the value is not valid YAML (")


# -----------------------------------------------------------------------------
# Import cost


def test_import_does_not_load_torch() -> None:
    """The module alone (without attractor/__init__.py, which imports the models) stays free
    of torch and of yaml until a --set string is parsed."""
    code = (
        "import sys, types\n"
        "package = types.ModuleType('attractor')\n"
        f"package.__path__ = [{str(ROOT / 'attractor')!r}]\n"
        "sys.modules['attractor'] = package\n"
        "import attractor.core.typed_config\n"
        "print(sorted({'torch', 'yaml'} & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"
