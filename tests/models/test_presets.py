"""Tests for attractor/presets.py and `attractor presets`: every preset builds, sizes match
their names, bad names are clear errors."""

from __future__ import annotations

import re

import pytest
import torch

from attractor.models import presets
from attractor.cli import main
from attractor.models.grid import GridModel

# the language-model sizes of DESIGN.md section 3, which preset names carry
LM_SIZES = {"140m": 140e6, "370m": 370e6, "770m": 770e6, "1.3b": 1.3e9}
SIZED = [n for n in presets.list_presets() if n.rsplit("-", 1)[-1] in LM_SIZES]
CPU = [n for n in presets.list_presets() if n.endswith("-cpu")]
LM_CPU = [n for n in CPU if not issubclass(presets.KINDS[presets.PRESETS[n][0]][0], GridModel)]


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


def test_unknown_field_names_the_valid_fields():
    with pytest.raises(ValueError, match=r"unknown config field\(s\) n_experts") as err:
        presets.build_model("gpt-cpu", n_experts=8)
    assert all(field in str(err.value) for field in ("dim", "n_layers", "n_heads"))


def test_unknown_kind_names_the_kinds():
    with pytest.raises(ValueError, match="unknown model kind 'rnn'") as err:
        presets.build_model(kind="rnn")
    assert all(kind in str(err.value) for kind in presets.KINDS)


def test_cli_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["preset", "params", "non-embed"]
    for name in presets.list_presets():
        row = next(line for line in lines if line.split()[0] == name)
        assert re.match(rf"{re.escape(name)}\s+[\d.]+[KMB]\s+[\d.]+[KMB]\s+\S", row)
    assert re.search(r"^gpt-140m\s+143\.\dM\s+42\.\dM\s+gpt 6x768 h6 ffn3072$", out, re.M)
