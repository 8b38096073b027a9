"""Reading the paper's release format (attractor/models/reference_format.py): the wrapper
prefixes and file names it accepts, and every bad input as one line that names the
problem, with nothing written by `attractor convert`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import attractor as at
from attractor.cli import main
from attractor.models import CheckpointError
from attractor.models.reference_format import reference_config

DATA = Path(__file__).resolve().parent.parent / "data" / "reference"


def copy(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(DATA / name, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


def edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def one_line_error(src: Path | str, tmp_path: Path, capsys) -> str:
    """The error of load_pretrained(src): one line; `attractor convert` gives the same line,
    exit 2, and writes nothing."""
    with pytest.raises(CheckpointError) as err:
        at.load_pretrained(src)
    message = str(err.value)
    assert "\n" not in message
    dst = tmp_path / "converted"
    assert main(["convert", str(src), str(dst)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and message in stderr
    assert not dst.exists()
    return message


def logits(model, ids=None):
    ids = torch.arange(16).view(2, 8) if ids is None else ids
    with torch.no_grad():
        return model.eval()(ids).logits


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("use_abacus", True),
        ("logit_softcap", 15.0),
        ("randomize_positions_from", 128),
        ("bias", True),
        ("block_class_name", "TransformerPostNormBlock"),
        ("nonlin_name", "GELU"),
        ("mup_model_scaling_factor", 2),
        ("init_strategy", "takase"),
    ],
)
def test_a_field_we_cannot_express_is_one_error_naming_it(field, value, tmp_path, capsys):
    src = copy("gpt-tiny", tmp_path)
    edit_config(src, **{field: value})
    message = one_line_error(src, tmp_path, capsys)
    assert f"{field} = {value!r} changes the computation" in message
    assert "cannot be loaded" in message


def test_an_unknown_field_is_named(tmp_path, capsys):
    src = copy("attractor-tiny", tmp_path)
    edit_config(src, mystery_gain=2.0)
    assert "unknown field 'mystery_gain' = 2.0" in one_line_error(src, tmp_path, capsys)


def test_unsupported_values_of_mapped_fields_are_named(tmp_path):
    data = json.loads((DATA / "parcae-tiny" / "config.json").read_text())
    cases = [
        ({"state_init": "unit"}, "state_init 'unit' is not supported"),
        ({"injection_type": "linear"}, "injection_type = 'linear' changes the computation"),
        ({"recurrent_iteration_method": "per-batch"}, "recurrent_iteration_method = 'per-batch'"),
        ({"rope_settings": {"use_rope": True, "rope_condense_ratio": 2, "rope_base": 5e4}},
         "rope_settings.rope_condense_ratio = 2 is not supported"),
        ({"tie_embeddings": False}, "tie_embeddings = false"),
    ]  # fmt: skip
    for change, expected in cases:
        with pytest.raises(CheckpointError, match=expected.replace("(", r"\(")):
            reference_config({**data, **change})
    attractor = json.loads((DATA / "attractor-tiny" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="backward_type 'exact' is not supported"):
        reference_config({**attractor, "backward_type": "exact"})
    with pytest.raises(CheckpointError, match="layer_scale_init = null"):
        reference_config({**attractor, "layer_scale_init": None})


def test_fields_map_onto_our_options():
    c = reference_config(json.loads((DATA / "attractor-tiny" / "config.json").read_text()))
    assert (c.vocab_size, c.padded_vocab_size, c.dim, c.n_heads, c.max_seq_len) == (
        100, 128, 64, 4, 64,
    )  # fmt: skip
    assert (c.norm_eps, c.qk_norm, c.rope_base, c.rope_layout, c.mlp_scale) == (
        1e-5, "weightless", 50000.0, "interleaved", 0.5,
    )  # fmt: skip
    assert (c.n_backbone, c.n_head_layers, c.gate_init, c.gate_max, c.gate_clamp) == (
        2, 1, 0.75, 0.75, 1e-6,
    )  # fmt: skip
    s = c.fixed_point.eval_solver
    assert (s.method, s.tol, s.min_iter, s.max_iter, s.history) == ("anderson", 3e-4, 6, 64, 5)
    p = reference_config(json.loads((DATA / "parcae-tiny" / "config.json").read_text()))
    assert (p.n_prelude, p.n_recurrent, p.n_coda, p.mean_depth, p.backprop_depth) == (
        2, 2, 2, 8.0, 4,
    )  # fmt: skip
    assert (p.prelude_norm, p.state_proj, p.state_init, p.depth_draw) == (
        True, True, "zero", "sequence",
    )  # fmt: skip
    assert (p.value_gate_input, p.value_embed_std, p.eval_depth) == ("normed", 1.0, 8)


def test_a_pickle_that_carries_code_is_refused_and_not_run(tmp_path, capsys):
    src = copy("gpt-tiny", tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"transformer.wte.weight": torch.zeros(2), "x": Payload()}, src / "model.pt")
    message = one_line_error(src, tmp_path, capsys)
    assert "carries pickled code" in message and "nothing was run" in message
    assert not marker.exists()


def test_a_truncated_file_is_refused(tmp_path, capsys):
    src = copy("parcae-tiny", tmp_path)
    data = (src / "model.pt").read_bytes()
    (src / "model.pt").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in one_line_error(src, tmp_path, capsys)


def test_a_shape_mismatch_names_the_key_and_both_shapes(tmp_path, capsys):
    src = copy("attractor-tiny", tmp_path)
    state = torch.load(src / "model.pt", weights_only=True)
    state["transformer.prelude.1.mlp.fc.weight"] = torch.zeros(128, 64)
    torch.save(state, src / "model.pt")
    message = one_line_error(src, tmp_path, capsys)
    assert "shape mismatch for transformer.prelude.1.mlp.fc.weight" in message
    assert "(128, 64) in the file, (256, 64) from config.json" in message


def test_an_unknown_class_name_is_named(tmp_path, capsys):
    src = copy("gpt-tiny", tmp_path)
    edit_config(src, _class_name="MambaConfig")
    assert "unknown _class_name 'MambaConfig'" in one_line_error(src, tmp_path, capsys)


def test_missing_weights_and_an_unexpected_tensor_are_named(tmp_path, capsys):
    src = copy("gpt-tiny", tmp_path)
    state = torch.load(src / "model.pt", weights_only=True)
    torch.save({**state, "transformer.h.0.attn.c_z.weight": torch.zeros(2)}, src / "model.pt")
    assert "unexpected tensor transformer.h.0.attn.c_z.weight" in one_line_error(
        src, tmp_path, capsys
    )
    del state["value_embeds.3.weight"]
    torch.save(state, src / "model.pt")
    assert "value_embeds.3.table.weight" in one_line_error(src, tmp_path, capsys)
    (src / "model.pt").unlink()
    assert "has none of model.safetensors, model.pt" in one_line_error(src, tmp_path, capsys)


def test_an_untied_lm_head_that_differs_from_the_embedding_is_refused(tmp_path, capsys):
    src = copy("gpt-tiny", tmp_path)
    state = torch.load(src / "model.pt", weights_only=True)
    state["lm_head.weight"] = state["lm_head.weight"] + 1.0
    torch.save(state, src / "model.pt")
    assert "lm_head.weight differs" in one_line_error(src, tmp_path, capsys)


@pytest.mark.parametrize("file", ["model.safetensors", "pytorch_model.bin", "model.bin"])
def test_prefixes_stripped_and_every_weight_file_name_read(file, tmp_path):
    src = copy("gpt-tiny", tmp_path)
    state = torch.load(src / "model.pt", weights_only=True)
    (src / "model.pt").unlink()
    wrapped = {f"module._orig_mod.model._forward_module.{k}": v for k, v in state.items()}
    if file.endswith(".safetensors"):
        wrapped.pop("module._orig_mod.model._forward_module.lm_head.weight")  # shares wte
        save_file({k: v.contiguous() for k, v in wrapped.items()}, str(src / file))
    else:
        torch.save(wrapped, src / file)
    torch.testing.assert_close(
        logits(at.load_pretrained(src)), logits(at.load_pretrained(DATA / "gpt-tiny"))
    )


def test_hub_ids_offline_give_one_line(monkeypatch, tmp_path, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    message = one_line_error("hf:jacobfa1/attractor-140m", tmp_path, capsys)
    assert "hf:jacobfa1/attractor-140m: cannot fetch jacobfa1/attractor-140m" in message
    assert "pass that directory instead" in message
    assert main(["eval", "hf:jacobfa1/attractor-140m", "--data", "pydoc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot fetch jacobfa1/attractor-140m" in err
    with pytest.raises(CheckpointError, match="expected hf:OWNER/NAME"):
        at.load_pretrained("hf:no-owner")


def test_hub_without_huggingface_hub_says_to_install_it(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name.startswith("huggingface_hub"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(CheckpointError, match="needs huggingface_hub; pip install huggingface_hub"):
        at.load_pretrained("hf:jacobfa1/attractor-140m@main")


NUMERICS = ("norm_eps", "qk_norm", "rope_base", "rope_layout", "mlp_scale")
OPTIONS = {
    "attractor": NUMERICS + ("gate_init", "gate_max", "gate_clamp"),
    "gpt": NUMERICS + ("value_gate_input", "value_embed_std"),
    "looped": NUMERICS
    + ("value_gate_input", "value_embed_std", "prelude_norm", "state_proj", "depth_draw"),
}
FIXTURES = {"attractor": "attractor-tiny", "gpt": "gpt-tiny", "looped": "parcae-tiny"}


@pytest.mark.parametrize(
    "name",
    ["attractor-140m", "attractor-370m", "attractor-770m", "gpt-140m", "gpt-370m", "gpt-770m",
     "gpt-1.3b", "looped-140m"],
)  # fmt: skip
def test_paper_presets_use_what_the_paper_code_computes(name):
    """Every option the reader sets for the paper's own configs (the fixtures, written by
    its code) is the preset's; the -cpu presets take its numerics, gates and value
    embeddings too, and keep our init (not the looped one's), backward and Parcae choices
    (measured better)."""
    preset = at.models.preset_config(name)
    kind = at.models.PRESETS[name][0]
    paper = reference_config(json.loads((DATA / FIXTURES[kind] / "config.json").read_text()))
    for option in OPTIONS[kind]:
        assert getattr(preset, option) == getattr(paper, option), option
    if kind == "attractor":
        assert preset.fixed_point.backward == paper.fixed_point.backward == "neumann"
        assert preset.fixed_point.neumann_clip is paper.fixed_point.neumann_clip is None
    if kind == "looped":  # the fixture starts at zero to be deterministic; the configs do not
        assert preset.state_init == "random"
    cpu = at.models.preset_config(f"{kind}-cpu")
    parcae = ("prelude_norm", "state_proj", "depth_draw")
    for option in OPTIONS[kind]:
        if option not in parcae:
            assert getattr(cpu, option) == getattr(paper, option), option
    assert preset.init == "scaled-orthogonal"
    assert cpu.init == ("scaled-orthogonal" if kind == "looped" else "gpt")
    if kind == "attractor":
        assert cpu.fixed_point.backward == "jfb"
    if kind == "looped":
        assert [getattr(cpu, o) for o in parcae] == [False, False, "batch"]
        assert cpu.state_init == "zero"
