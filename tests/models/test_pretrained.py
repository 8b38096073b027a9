"""Tests for attractor/models/pretrained.py: round trips, and one clear error per broken
checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor, nn

import attractor as at
from attractor.engine import SolverConfig
from attractor.models import LanguageModel, ModelOutput, presets, pretrained, registry
from attractor.models.grid import GridModel
from attractor.models.pretrained import CheckpointError, load_pretrained, save_pretrained

TINY_GPT = dict(kind="gpt", vocab_size=64, dim=32, n_layers=2, n_heads=2, max_seq_len=64)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def gpt():
    return presets.build_model(**TINY_GPT).eval()


@pytest.fixture
def saved(gpt, tmp_path):
    directory = tmp_path / "ckpt"
    save_pretrained(gpt, directory)
    return directory


def ids(vocab: int = 64) -> Tensor:
    return torch.randint(0, vocab, (2, 12))


# -----------------------------------------------------------------------------
# A test-only model family whose config nests dataclasses, registered for one test


@dataclass
class Scales:
    inner: float = 1.0
    outer: float = 1.0


@dataclass
class NestedConfig:
    vocab_size: int = 16
    dim: int = 8
    solver: SolverConfig = field(default_factory=SolverConfig)
    scales: Scales | None = None
    betas: tuple[float, float] = (0.9, 0.95)
    widths: tuple[int, ...] = (8, 8)
    overlap: bool = False  # a buffer viewing half of a parameter's memory


class NestedModel(LanguageModel):
    kind = "nested-test"

    def __init__(self, config: NestedConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.out = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.out.weight = self.embed.weight  # a second name for one tensor
        if config.overlap:
            self.register_buffer("rows", self.proj.weight.data[: config.dim // 2])

    def forward(self, input_ids, labels=None, depth=None) -> ModelOutput:
        return ModelOutput(logits=self.out(torch.tanh(self.proj(self.embed(input_ids)))))


@pytest.fixture
def nested_kind(monkeypatch):
    monkeypatch.setitem(registry.KINDS, NestedModel.kind, (NestedModel, NestedConfig))


# -----------------------------------------------------------------------------
# Round trips


def test_gpt_round_trip_gives_identical_logits_and_config(gpt, saved):
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_pretrained(saved)
    assert isinstance(loaded, type(gpt))
    assert loaded.config == gpt.config
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, gpt(x).logits, rtol=0, atol=0)
    assert json.loads((saved / "config.json").read_text()) == gpt.config_dict()


@pytest.mark.parametrize("name", [n for n in presets.list_presets() if n.endswith("-cpu")])
def test_cpu_presets_round_trip(name, tmp_path):
    model = presets.build_model(name).eval()
    save_pretrained(model, tmp_path)
    loaded = load_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    x = ids(model.config.vocab_size)
    if isinstance(model, GridModel):  # a whole grid of cells
        x = torch.randint(0, model.config.vocab_size, (2, model.config.cells))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)


def test_public_names_are_exported():
    assert at.load_pretrained is load_pretrained
    assert at.build_model is presets.build_model
    assert at.list_presets() == presets.list_presets()


def test_save_overwrites_an_existing_checkpoint(gpt, saved):
    other = presets.build_model(**{**TINY_GPT, "n_layers": 3})
    save_pretrained(other, saved)
    assert load_pretrained(saved).config.n_layers == 3
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]


def test_nested_dataclass_config_round_trip(nested_kind, tmp_path):
    config = NestedConfig(
        solver=SolverConfig(method="picard", tol=3e-4, max_iter=12, mixing=0.5),
        scales=Scales(inner=0.5, outer=2.0),
        betas=(0.8, 0.95),
        widths=(4, 5, 6),
    )
    model = presets.model_from_config(config)
    save_pretrained(model, tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["kind"] == "nested-test"
    assert data["solver"]["method"] == "picard" and data["scales"] == {"inner": 0.5, "outer": 2.0}

    loaded = load_pretrained(tmp_path)
    assert loaded.config == config
    assert isinstance(loaded.config.solver, SolverConfig)
    assert isinstance(loaded.config.scales, Scales)
    assert isinstance(loaded.config.betas, tuple)
    assert loaded.out.weight is loaded.embed.weight
    x = ids(16)
    torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)


def test_nested_none_and_defaults_round_trip(nested_kind, tmp_path):
    save_pretrained(presets.model_from_config(NestedConfig()), tmp_path)
    assert load_pretrained(tmp_path).config == NestedConfig()


def test_unknown_nested_field_is_named(nested_kind, tmp_path):
    save_pretrained(presets.model_from_config(NestedConfig()), tmp_path)
    edit_config(tmp_path, lambda d: d["solver"].update(bogus=1))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'config.json'}: nested-test.solver.bogus: unknown key; valid keys under "
        "nested-test.solver: method, tol, relative_to, max_iter, min_iter, history, mixing, "
        "regularization, absolute_regularization, diverge_above, check_every, stall_patience, "
        "return_last, freeze_converged; fix config.json or save the model again"
    )


def test_invalid_nested_value_is_one_clear_error(nested_kind, tmp_path):
    save_pretrained(presets.model_from_config(NestedConfig()), tmp_path)
    edit_config(tmp_path, lambda d: d["solver"].update(method="newton"))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'config.json'}: nested-test.solver.method: 'newton' is not one of "
        "'anderson', 'picard', 'broyden'; fix config.json or save the model again"
    )


# -----------------------------------------------------------------------------
# Errors: one ValueError naming the problem


def edit_config(directory, change):
    path = directory / "config.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="does not exist; pass the directory"):
        load_pretrained(tmp_path / "nowhere")


def test_directory_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        load_pretrained(tmp_path / "f")


def test_missing_config(saved):
    (saved / "config.json").unlink()
    with pytest.raises(ValueError, match="has no config.json"):
        load_pretrained(saved)


def test_missing_weights(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="has no model.safetensors.*save the model again"):
        load_pretrained(saved)


def test_config_not_json(saved):
    (saved / "config.json").write_text('{"kind": "gpt", "dim": ')
    with pytest.raises(ValueError, match=r"config.json is not valid JSON \(.*line 1"):
        load_pretrained(saved)


@pytest.mark.parametrize("content", ["[1, 2]", '{"dim": 32}', '{"kind": 3}'])
def test_config_without_kind(saved, content):
    (saved / "config.json").write_text(content)
    with pytest.raises(ValueError, match='expected a JSON object with a "kind" field'):
        load_pretrained(saved)


def test_unknown_kind(saved):
    edit_config(saved, lambda d: d.update(kind="transformer-xl"))
    with pytest.raises(ValueError, match=r"unknown model kind 'transformer-xl' \(known: .*gpt"):
        load_pretrained(saved)


def test_unknown_config_field(saved):
    edit_config(saved, lambda d: d.update(n_experts=8))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(saved)
    msg = str(err.value)
    assert msg.startswith(f"{saved / 'config.json'}: gpt.n_experts: unknown key; valid keys ")
    assert "\n" not in msg and all(f in msg for f in ("dim", "n_layers", "value_embeds"))


def test_wrong_typed_config_value_is_one_line(saved):
    edit_config(saved, lambda d: d.update(n_layers=1.5))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(saved)
    assert str(err.value) == (
        f"{saved / 'config.json'}: gpt.n_layers: expected an integer, got 1.5; "
        "fix config.json or save the model again"
    )


def test_fixed_point_settings_round_trip_nested(tmp_path):
    model = presets.build_model(
        kind="deq",
        vocab_size=64,
        dim=32,
        n_heads=2,
        fixed_point=dict(backward="phantom", backward_steps=3, neumann_clip=None),
    )
    save_pretrained(model, tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["fixed_point"]["backward"] == "phantom"
    assert data["fixed_point"]["neumann_clip"] is None
    assert data["fixed_point"]["eval_solver"]["max_iter"] == 64
    assert load_pretrained(tmp_path).config == model.config


def test_config_that_cannot_build_a_model(saved):
    edit_config(saved, lambda d: d.update(dim=30))  # not divisible into 2 even-width heads
    with pytest.raises(ValueError, match="cannot build a GPTConfig model"):
        load_pretrained(saved)


@pytest.mark.parametrize("corrupt", ["truncated", "garbage", "empty"])
def test_corrupt_weights(saved, corrupt):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    bad = {"truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 8, "empty": b""}
    path.write_bytes(bad[corrupt])
    with pytest.raises(ValueError, match="not a readable safetensors file.*truncated or corrupt"):
        load_pretrained(saved)


def test_weights_for_another_shape(saved):
    edit_config(saved, lambda d: d.update(dim=64))
    with pytest.raises(ValueError) as err:
        load_pretrained(saved)
    msg = str(err.value)
    assert "does not match config.json" in msg and "shape mismatch" in msg
    assert "embed.weight (64, 32) in the file, (64, 64) in the model" in msg
    assert "more)" in msg  # long lists are cut to a few names


def test_weights_missing_and_unexpected_tensors(saved):
    edit_config(saved, lambda d: d.update(n_layers=3))
    with pytest.raises(ValueError, match=r"missing \d+ tensor\(s\): blocks\.2\."):
        load_pretrained(saved)
    edit_config(saved, lambda d: d.update(n_layers=1))
    with pytest.raises(ValueError, match=r"\d+ unexpected tensor\(s\): blocks\.1\."):
        load_pretrained(saved)


def test_errors_are_checkpoint_errors(saved):
    (saved / "config.json").write_text("nope")
    with pytest.raises(CheckpointError):
        load_pretrained(saved)
    assert issubclass(CheckpointError, ValueError)


# -----------------------------------------------------------------------------
# Saving is atomic


def test_failed_weight_write_leaves_nothing(gpt, tmp_path, monkeypatch):
    def half_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pretrained, "save_file", half_write)
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(gpt, existing)
    assert list(existing.iterdir()) == []
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(gpt, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_failed_overwrite_keeps_the_old_checkpoint(gpt, saved, monkeypatch):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}

    def fail(tensors, filename, metadata=None):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(pretrained, "save_file", fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        save_pretrained(presets.build_model(**{**TINY_GPT, "n_layers": 3}), saved)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before


def test_save_to_a_file_path_is_an_error(gpt, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file; pass a directory"):
        save_pretrained(gpt, tmp_path / "f")


def test_meta_model_cannot_be_saved(tmp_path):
    with torch.device("meta"):
        model = presets.build_model(**TINY_GPT)
    with pytest.raises(ValueError, match="meta device"):
        save_pretrained(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_partly_overlapping_tensors_round_trip(nested_kind, tmp_path):
    model = presets.model_from_config(NestedConfig(overlap=True))  # safetensors refuses overlap
    save_pretrained(model, tmp_path)
    tensors = pretrained.load_file(str(tmp_path / "model.safetensors"))
    assert "out.weight" not in tensors and "embed.weight" in tensors
    loaded = load_pretrained(tmp_path)
    torch.testing.assert_close(loaded.rows, model.proj.weight.data[:4], rtol=0, atol=0)
    torch.testing.assert_close(loaded.proj.weight, model.proj.weight, rtol=0, atol=0)
