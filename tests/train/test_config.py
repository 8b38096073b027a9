"""The run config (attractor/train/config.py): every value checked against its type hint
when the config loads, the model's overrides included (issue 14, bug 3); packaged configs
by name; one line on the command line for bad input."""

import pytest
import torch
import yaml

from attractor.cli import main
from attractor.core.typed_config import ConfigError
from attractor.train import trainer as trainer_module
from attractor.train.config import CONFIGS, config_path, load_config, named_configs
from attractor.train.trainer import build_run_model


def load_error(*sets: str, path: str | None = "lm-smoke") -> str:
    """The message of the ConfigError that loading `path` with `sets` raises."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, list(sets))
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "assignment, key, value, allowed",
    [
        ("train.steps=abc", "train.steps", "'abc'", "an integer"),
        ("train.strategy=zero3", "train.strategy", "'zero3'", "one of 'none', 'ddp', 'fsdp'"),
        ("data.batch_size=1.5", "data.batch_size", "1.5", "an integer"),
        ("train.progress=maybe", "train.progress", "'maybe'", "true or false"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_key_the_value_and_what_is_allowed(
    assignment, key, value, allowed
):
    message = load_error(assignment)
    assert message.startswith(f"{key}: ")
    assert value in message and allowed in message


def test_a_float_override_written_5e_1_loads_as_the_number():
    # YAML 1.1 reads 5e-1 as the string "5e-1"; the typed loader makes it the float 0.5
    cfg = load_config("lm-smoke", ["model.overrides.gate_init=5e-1"])
    assert cfg.model.overrides["gate_init"] == 0.5
    assert isinstance(cfg.model.overrides["gate_init"], float)
    with torch.device("meta"):
        model = build_run_model(cfg.model)
    assert model.config.gate_init == 0.5
    assert model.config.vocab_size == 257  # the YAML's other overrides still apply


def test_a_nested_solver_override_reaches_the_built_model():
    cfg = load_config(
        None, ["model.preset=attractor-140m", "model.overrides.fixed_point.eval_solver.tol=1e-3"]
    )
    assert cfg.model.overrides == {"fixed_point": {"eval_solver": {"tol": 0.001}}}
    with torch.device("meta"):
        model = build_run_model(cfg.model)
    fixed_point = model.config.fixed_point
    assert fixed_point.eval_solver.tol == 1e-3
    assert fixed_point.solver(training=False).tol == 1e-3
    # merged field by field over the preset's solver: the rest of it is the preset's
    assert fixed_point.eval_solver.max_iter == 64 and fixed_point.eval_solver.min_iter == 6
    assert fixed_point.train_solver.tol == 3e-4


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("model.overrides.gate_initt=1", "model.overrides.gate_initt: unknown key"),
        ("model.overrides.n_heads=2.5", "model.overrides.n_heads: expected an integer, got 2.5"),
        (
            "model.overrides.fixed_point.backward=onestep",
            "model.overrides.fixed_point.backward: 'onestep' is not one of 'jfb', 'neumann'",
        ),
    ],
)
def test_a_bad_model_override_fails_when_the_config_loads(
    monkeypatch, capsys, assignment, expected
):
    message = load_error(assignment)
    assert message.startswith(expected)
    if "unknown key" in expected:
        assert "valid keys under model.overrides: " in message and "gate_init" in message

    def no_trainer(*args, **kwargs):
        raise AssertionError("the config should have been refused before any Trainer exists")

    monkeypatch.setattr(trainer_module.Trainer, "__init__", no_trainer)
    assert main(["train", "lm-smoke", "--set", assignment]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"attractor train: {message}"]


def test_a_packaged_config_is_found_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing named sudoku6-cpu here
    assert config_path("sudoku6-cpu") == config_path("sudoku6-cpu.yaml")
    assert config_path("sudoku6-cpu") == CONFIGS / "sudoku6-cpu.yaml"
    shipped = yaml.safe_load((CONFIGS / "sudoku6-cpu.yaml").read_text())
    cfg = load_config("sudoku6-cpu")
    assert cfg.model.preset == shipped["model"]["preset"]
    assert cfg.data.source == shipped["data"]["source"]
    assert cfg.train.steps == shipped["train"]["steps"]
    assert cfg.optim.name == shipped["optim"]["name"]


def test_an_unknown_config_name_is_one_line_listing_the_packaged_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = load_error(path="sudoku7-cpu")
    assert "sudoku7-cpu" in message and "neither a YAML file nor a packaged config" in message
    listed = message.rsplit("one of ", 1)[1].split(", ")
    assert listed == named_configs() and "sudoku6-cpu" in listed and "lm-smoke" in listed


def test_the_command_line_prints_one_line_and_returns_2_for_a_wrong_value(capsys):
    assert main(["train", "lm-smoke", "--set", "train.steps=abc"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        "attractor train: train.steps: expected an integer, got 'abc'"
    ]
    assert "Traceback" not in captured.err
