"""Tests for attractor/models/presets.py and `attractor presets`: every preset builds, sizes
match their names, overrides deep-merge, bad names and values are one clear line."""

from __future__ import annotations

import re

import pytest
import torch

from attractor.cli import main
from attractor.core.typed_config import ConfigError
from attractor.engine import SolverConfig
from attractor.models import presets
from attractor.models.grid import GridModel
from attractor.models.registry import KINDS

# the language-model sizes of docs/method.md section 4.1, which preset names carry
LM_SIZES = {"140m": 140e6, "370m": 370e6, "770m": 770e6, "1.3b": 1.3e9}
SIZED = [n for n in presets.list_presets() if n.rsplit("-", 1)[-1] in LM_SIZES]
CPU = [n for n in presets.list_presets() if n.endswith("-cpu")]
LM_CPU = [n for n in CPU if not issubclass(KINDS[presets.PRESETS[n][0]][0], GridModel)]


def meta_model(name: str, **fields):
    with torch.device("meta"):
        return presets.build_model(name, **fields)


@pytest.mark.parametrize("name", presets.list_presets())
def test_every_preset_builds_on_the_meta_device(name):
    model = meta_model(name)
    assert model.kind == presets.PRESETS[name][0]
    assert 0 < model.num_params(non_embedding=True) < model.num_params()


def test_the_paper_sizes_are_presets():
    assert len(SIZED) >= 7 and len(CPU) >= 2


@pytest.mark.parametrize("name", SIZED)
def test_sized_preset_is_within_5_percent_of_its_name(name):
    target = LM_SIZES[name.rsplit("-", 1)[-1]]
    n = meta_model(name).num_params()
    assert abs(n - target) <= 0.05 * target, f"{name}: {n / 1e6:.1f}M parameters"


@pytest.mark.parametrize("name", LM_CPU)
def test_cpu_preset_is_small_and_runs(name):
    torch.manual_seed(0)
    model = presets.build_model(name).eval()
    assert 2e6 <= model.num_params() <= 10e6
    ids = torch.randint(0, model.config.vocab_size, (1, 16))
    with torch.no_grad():
        out = model(ids, labels=ids)
    assert out.logits.shape == (1, 16, model.config.vocab_size)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)


def test_overrides_apply():
    model = meta_model("gpt-cpu", n_layers=1)
    assert model.config.n_layers == 1 and len(model.blocks) == 1


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="unknown preset 'gpt-9000'") as err:
        presets.build_model("gpt-9000")
    assert all(name in str(err.value) for name in presets.list_presets())


def test_nested_overrides_deep_merge_over_the_preset():
    solver = SolverConfig("picard", tol=1e-2, max_iter=3)
    config = presets.preset_config("reasoner-joint-cpu", fixed_point=dict(eval_solver=solver))
    base = presets.preset_config("reasoner-joint-cpu")
    assert config.fixed_point.eval_solver == solver
    assert config.fixed_point.train_solver == base.fixed_point.train_solver
    assert config.fixed_point.backward == "phantom"  # the reasoner's own backward survives
    deeper = presets.preset_config("attractor-cpu", fixed_point=dict(eval_solver=dict(tol=0.5)))
    assert deeper.fixed_point.eval_solver.tol == 0.5
    assert deeper.fixed_point.eval_solver.max_iter == 16  # the preset's, not the default 32


def test_kind_fields_deep_merge_over_the_family_defaults():
    # a nested mapping replaces only the keys it names; the family's own solver stays
    model = meta_model_kind("attractor", fixed_point=dict(backward="neumann"))
    default = meta_model_kind("attractor")
    assert model.config.fixed_point.backward == "neumann"
    assert model.config.fixed_point.train_solver == default.config.fixed_point.train_solver
    assert model.config.fixed_point.train_solver.freeze_converged  # the family's, not the base's
    reasoner = meta_model_kind("reasoner", fixed_point=dict(backward_steps=3))
    assert (reasoner.config.fixed_point.backward, reasoner.config.fixed_point.backward_steps) == (
        "phantom",
        3,
    )


def meta_model_kind(kind: str, **fields):
    with torch.device("meta"):
        return presets.build_model(kind=kind, dim=32, n_heads=2, **fields)


def test_cpu_grid_presets_keep_their_family_backward():
    # reasoner-joint-cpu trains with the reasoner's phantom gradient (k = 2), as before the
    # fixed-point settings moved into one dataclass
    assert presets.preset_config("reasoner-joint-cpu").fixed_point.backward == "phantom"
    assert presets.preset_config("reasoner-joint-cpu").fixed_point.backward_steps == 2
    assert presets.preset_config("grid-attractor-cpu").fixed_point.backward == "jfb"


def test_unknown_field_names_the_valid_fields():
    with pytest.raises(ConfigError) as err:
        presets.build_model("gpt-cpu", n_experts=8)
    msg = str(err.value)
    assert msg.startswith("gpt-cpu.n_experts: unknown key; valid keys under gpt-cpu: ")
    assert "\n" not in msg and all(f in msg for f in ("dim", "n_layers", "n_heads"))


def test_wrong_nested_value_is_one_line_naming_path_value_and_choices():
    with pytest.raises(ConfigError) as err:
        presets.build_model("attractor-cpu", fixed_point=dict(backward="onestep"))
    assert str(err.value) == (
        "attractor-cpu.fixed_point.backward: 'onestep' is not one of "
        "'jfb', 'neumann', 'adjoint', 'phantom'"
    )
    with pytest.raises(ConfigError, match=r"^gpt-cpu\.fixed_point: unknown key"):
        presets.build_model("gpt-cpu", fixed_point=dict(backward="jfb"))


def test_unknown_kind_names_the_kinds():
    with pytest.raises(ValueError, match="unknown model kind 'rnn'") as err:
        presets.build_model(kind="rnn")
    assert all(kind in str(err.value) for kind in KINDS)


def test_cli_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["preset", "params", "non-embed"]
    for name in presets.list_presets():
        row = next(line for line in lines if line.split()[0] == name)
        assert re.match(rf"{re.escape(name)}\s+[\d.]+[KMB]\s+[\d.]+[KMB]\s+\S", row)
    assert re.search(r"^gpt-140m\s+143\.\dM\s+42\.\dM\s+gpt 6x768 h6 ffn3072$", out, re.M)
    # the paper presets solve per sequence and say so; ours per position, unnamed
    assert re.search(r"^attractor-140m\s.*tol0\.0003 per sequence$", out, re.M)
    assert re.search(r"^attractor-cpu\s.*tol0\.001$", out, re.M)


@pytest.mark.parametrize("name", ["attractor-140m", "attractor-370m", "attractor-770m"])
def test_paper_attractor_presets_solve_as_the_paper_code(name):
    # one sample a sequence, the last image, no freezing, lambda 1e-4 as it is: the reference's
    # solve (tests/models/test_reference_parity.py checks its numbers on the fixture)
    c = presets.preset_config(name)
    assert c.solve_unit == "sequence"
    for solver in (c.fixed_point.train_solver, c.fixed_point.eval_solver):
        assert solver.return_last and not solver.freeze_converged
        assert solver.relative_to == "image" and solver.stall_patience == 0
        assert solver.absolute_regularization and solver.regularization == 1e-4
    ours = presets.preset_config("attractor-cpu")
    assert ours.solve_unit == "position" and ours.fixed_point.eval_solver.freeze_converged
