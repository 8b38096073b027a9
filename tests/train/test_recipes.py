"""Both recipes by name: the -cpu configs keep ours (muon-ns: their optimizer and steps as
before), the paper's configs and lm-pydocs-cpu-reference use the paper's (optim.name muon,
scaled-orthogonal init, and for an attractor one Neumann term and fixed gates)."""

import pytest
import torch

from attractor.core.typed_config import ConfigError
from attractor.models import preset_config
from attractor.train.config import load_config
from attractor.train.optim import Muon, build_optimizer
from attractor.train.polar_muon import PolarMuon
from attractor.train.schedule import lr_factor
from attractor.train.trainer import Trainer

CPU_CONFIGS = ["lm-smoke", "lm-pydocs-cpu", "attractor-cpu", "gpt-cpu", "looped-cpu", "deq-cpu"]
PAPER_CONFIGS = ["attractor-140m-fineweb", "gpt-140m-fineweb", "looped-140m-fineweb"]
# What the reference's blocks and GPT value embeddings compute (../shared/reference/README.md)
PAPER_BLOCKS = dict(
    norm_eps=1e-5,
    qk_norm="weightless",
    rope_base=50000.0,
    rope_layout="interleaved",
    mlp_scale=0.5,
    init="scaled-orthogonal",
)
PAPER_VALUE_EMBEDS = dict(value_gate_input="normed", value_embed_std=1.0)


def test_cpu_configs_keep_our_recipe_and_paper_configs_use_the_papers():
    for name in CPU_CONFIGS:
        cfg = load_config(name)
        assert cfg.optim.name == "muon-ns" and cfg.optim.eps == 1e-8, name
        assert preset_config(cfg.model.preset, **cfg.model.overrides).init == "gpt", name
    for name in PAPER_CONFIGS:
        cfg = load_config(name)
        assert cfg.optim.name == "muon", name
        assert preset_config(cfg.model.preset).init == "scaled-orthogonal", name


def test_the_reference_config_is_lm_pydocs_cpu_with_the_papers_recipe():
    ours, ref = load_config("lm-pydocs-cpu"), load_config("lm-pydocs-cpu-reference")
    assert ref.data == ours.data and ref.schedule == ours.schedule
    assert (ref.optim.lr, ref.optim.muon_lr) == (ours.optim.lr, ours.optim.muon_lr)
    assert ref.optim.name == "muon" and ref.train.steps == 400
    assert ref.data.batch_size * ref.data.seq_len == 16 * 256
    attractor = preset_config("attractor-cpu", **ref.model.overrides)
    assert attractor.init == "scaled-orthogonal"
    assert (attractor.gate_init, attractor.gate_max, attractor.gate_clamp) == (0.75, 0.75, 1e-6)
    assert attractor.fixed_point.backward == "neumann"
    assert attractor.fixed_point.neumann_clip is None
    gpt = load_config("lm-pydocs-cpu-reference", ["model.preset=gpt-cpu"]).model
    # the attractor's fields left out; the models the reference ran: its block numerics, and
    # its value embeddings for GPT
    assert gpt.overrides == {**PAPER_BLOCKS, **PAPER_VALUE_EMBEDS}
    assert {k: ref.model.overrides[k] for k in PAPER_BLOCKS} == PAPER_BLOCKS


def test_kind_overrides_are_checked_for_every_kind():
    with pytest.raises(ConfigError, match="model.kind_overrides.gpt: .*gate_max: unknown key"):
        load_config("lm-pydocs-cpu-reference", ["model.kind_overrides.gpt.gate_max=0.5"])
    with pytest.raises(ConfigError, match="unknown model kind 'gtp'"):
        load_config("lm-pydocs-cpu-reference", ["model.kind_overrides.gtp.dim=8"])
    # overrides win over kind_overrides
    cfg = load_config("lm-pydocs-cpu-reference", ["model.overrides.gate_max=0.9"])
    assert cfg.model.overrides["gate_max"] == 0.9


def smoke_sets(tmp_path) -> list[str]:
    return ["train.steps=3", "train.eval_every=0", "train.progress=false", "data.batch_size=2",
            "data.seq_len=32", f"train.out_dir={tmp_path}", "train.device=cpu"]  # fmt: skip


def test_lm_smoke_steps_as_our_optimizer_always_did(tmp_path):
    """lm-smoke's trainer takes the steps of `build_optimizer` (ours, unchanged) in a plain
    loop: the same groups, losses and weights. (Checked once against main's code as well:
    the same groups, losses and weights after 3 steps, exactly.)"""
    cfg = load_config("lm-smoke", smoke_sets(tmp_path))
    trainer, plain = Trainer(cfg), Trainer(cfg)
    opt = build_optimizer(plain.raw, cfg.optim)
    assert isinstance(trainer.opt.optimizers["muon"], Muon)
    assert [(g["name"], g["lr"], g.get("weight_decay"), len(g["params"]))
            for g in trainer.opt.param_groups] == [
        (g["name"], g["lr"], g.get("weight_decay"), len(g["params"])) for g in opt.param_groups
    ]  # fmt: skip
    for step in range(3):
        ours = trainer.train_step().loss
        opt.set_lr_factor(lr_factor(step, cfg.train.steps, cfg.schedule))
        opt.zero_grad()
        loss = plain.task.loss(plain.raw, plain.task.next_batch())[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.raw.parameters(), cfg.train.grad_clip)
        opt.step()
        assert ours == float(loss.detach())
    for a, b in zip(trainer.raw.parameters(), plain.raw.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_papers_recipe_skips_the_first_step_and_warms_the_momentum(tmp_path):
    sets = smoke_sets(tmp_path) + ["optim.name=muon", "optim.eps=null"]
    trainer = Trainer(load_config("lm-smoke", sets))
    before = [p.detach().clone() for p in trainer.raw.parameters()]
    trainer.train_step()
    assert all(torch.equal(a, p) for a, p in zip(before, trainer.raw.parameters(), strict=True))
    trainer.train_step()
    assert not all(torch.equal(a, p) for a, p in zip(before, trainer.raw.parameters(), strict=True))
    muon = trainer.opt.optimizers["muon"]
    assert isinstance(muon, PolarMuon)
    # step 1 of 3: momentum 0.85 + 0.1 / 300, weight decay 0.2 (1 - 1 / 3)
    assert muon.param_groups[0]["momentum"] == pytest.approx(0.85 + 0.1 / 300)
    assert muon.param_groups[0]["weight_decay"] == pytest.approx(0.2 * 2 / 3)
