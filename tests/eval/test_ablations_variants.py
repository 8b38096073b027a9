"""benchmarks/ablations.py's variants: each changes what its name says and nothing else,
the default list is the variants that change the run under the given config, and a
variant of another model kind is one clear error."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import ablations  # noqa: E402

from attractor.models import preset_config  # noqa: E402
from attractor.train.config import load_config  # noqa: E402


def _args(config: str, model: str) -> argparse.Namespace:
    schedule = dict(steps=400, seq_len=256, batch_size=16, eval_every=0, eval_batches=16,
                    warmup_steps=None)  # fmt: skip
    return argparse.Namespace(config=config, model=model, work="runs/x", **schedule)


def _changed(config: str, model: str, variant: str) -> tuple[dict, dict]:
    """The fields of the model config and of the optimizer config that `variant` changes."""
    args = _args(config, model)
    base = load_config(config, ablations.run_sets("baseline", Path("d"), args))
    run = load_config(config, ablations.run_sets(variant, Path("d"), args))
    m0, m1 = (preset_config(c.model.preset, **c.model.overrides) for c in (base, run))
    model_diff = {
        f.name: getattr(m1, f.name)
        for f in dataclasses.fields(m1)
        if getattr(m1, f.name) != getattr(m0, f.name)
    }
    optim_diff = {
        f.name: getattr(run.optim, f.name)
        for f in dataclasses.fields(run.optim)
        if getattr(run.optim, f.name) != getattr(base.optim, f.name)
    }
    return model_diff, optim_diff


REFERENCE = "lm-pydocs-cpu-reference"


def test_the_default_lists_are_the_variants_that_change_the_run():
    gpt = ablations.changed_variants(_args(REFERENCE, "gpt-cpu"))
    assert gpt == ["baseline", "init-normal", "muon-ns", "no-weight-decay", "numerics-ours"]
    ours = ablations.changed_variants(_args("lm-pydocs-cpu", "attractor-cpu"))
    assert {"gates-learnable", "init-orthogonal", "muon-ns", "no-weight-decay",
            "numerics-ours"} <= set(ours)  # fmt: skip
    assert not {"gates-fixed", "init-normal", "muon", "numerics-paper", "jfb"} & set(ours)


def test_recipe_variants_change_one_piece():
    model, optim = _changed(REFERENCE, "attractor-cpu", "gates-learnable")
    assert model == {"gate_max": 1.0, "gate_clamp": 1e-3} and optim == {}
    model, optim = _changed(REFERENCE, "attractor-cpu", "init-normal")
    assert model == {"init": "gpt"} and optim == {}
    model, optim = _changed(REFERENCE, "gpt-cpu", "no-weight-decay")
    assert model == {} and optim == {"muon_weight_decay": 0.0, "head_weight_decay": 0.0}
    model, optim = _changed(REFERENCE, "gpt-cpu", "muon-ns")
    assert model == {} and optim == {"name": "muon-ns", "eps": 1e-8}
    model, optim = _changed(REFERENCE, "gpt-cpu", "numerics-ours")
    assert optim == {}
    assert model == {"norm_eps": 1e-6, "qk_norm": "learned", "rope_base": 10000.0,
                     "rope_layout": "half", "mlp_scale": 1.0, "value_gate_input": "residual",
                     "value_embed_std": None}  # fmt: skip
    model, _ = _changed(REFERENCE, "attractor-cpu", "jfb")
    assert model["fixed_point"].backward == "jfb" and set(model) == {"fixed_point"}


def test_parcae_and_numerics_variants_change_the_looped_model():
    model, optim = _changed(REFERENCE, "looped-cpu", "parcae-ours")
    assert optim == {}
    assert model == {"prelude_norm": False, "state_proj": False, "state_init": "zero",
                     "depth_draw": "batch"}  # fmt: skip
    model, _ = _changed("lm-pydocs-cpu", "looped-cpu", "parcae-paper")
    assert model == {"prelude_norm": True, "state_proj": True, "state_init": "random",
                     "depth_draw": "sequence"}  # fmt: skip
    model, _ = _changed(REFERENCE, "looped-cpu", "numerics-ours")
    assert model["value_gate_input"] == "residual" and model["value_embed_std"] is None
    model, _ = _changed("lm-pydocs-cpu", "looped-cpu", "numerics-ours")
    assert model["value_gate_input"] == "residual" and model["value_embed_std"] is None


def test_warmup_scales_with_the_steps_unless_given():
    def warmup(args: argparse.Namespace) -> int:
        return load_config(
            REFERENCE, ablations.run_sets("baseline", Path("d"), args)
        ).schedule.warmup_steps

    args = _args(REFERENCE, "attractor-cpu")
    args.steps = 800  # twice the config's 400 steps: twice its 20 warm-up steps
    assert warmup(args) == 40
    args.warmup_steps = 20
    assert warmup(args) == 20


def test_a_variant_of_another_kind_is_one_error():
    with pytest.raises(SystemExit, match="jfb do not apply to gpt-cpu"):
        ablations.parse_variants("muon-ns,jfb", "gpt-cpu")
    with pytest.raises(SystemExit, match="unknown variant"):
        ablations.parse_variants("adjoint,nope", "attractor-cpu")
