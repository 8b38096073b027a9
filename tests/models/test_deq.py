"""Tests for attractor/models/deq.py: the equilibrium against its map written out here,
hand-run Picard steps, the untied head, gradients and causality."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attractor.core.typed_config import ConfigError, to_data
from attractor.engine import FixedPointConfig, SolverConfig
from attractor.models import build_model
from attractor.models.deq import DEQ, DEQConfig
from attractor.models.pretrained import config_from_dict

VOCAB = 64
TIGHT = SolverConfig(method="anderson", tol=1e-6, max_iter=200)


def tiny(**fields) -> DEQ:
    """A small embedding (std 0.05, not the default 1.0) so that the blocks move z* well away
    from x and the solve takes several iterations; `fixed_point` entries are merged over the
    DEQ's defaults."""
    cfg = dict(vocab_size=VOCAB, dim=32, n_heads=4, n_layers=2, max_seq_len=64, embed_init_std=0.05)
    model = build_model(kind="deq", **{**cfg, **fields})
    assert isinstance(model, DEQ)
    return model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -----------------------------------------------------------------------------
# Independent reference: f(z; x) = x + (sum of the blocks' residual branches at z + x)


def f_ref(model, z, x):
    h = z + x
    branches = torch.zeros_like(h)
    for block in model.blocks:
        a = block.attn(block.norm1(h))
        h = h + a
        m = block.mlp(block.norm2(h))
        h = h + m
        branches = branches + a + m
    return x + branches


def decode_ref(model, z):
    n = z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + model.norm.eps) * model.norm.weight
    return n @ model.head.weight.T


def embed_ref(model, ids):
    return model.config.embed_scale * model.embed.weight[ids]


# -----------------------------------------------------------------------------
# The equilibrium


def test_forward_output_is_a_fixed_point_of_the_map():
    model = tiny(fixed_point=dict(eval_solver=TIGHT)).eval()
    ids = torch.randint(0, VOCAB, (3, 10))
    with torch.no_grad():
        z, stats = model.equilibrium(ids)
        out = model(ids)
        x = embed_ref(model, ids)
        fz = f_ref(model, z, x)
    assert stats.converged.all() and stats.iters < TIGHT.max_iter
    res = (fz - z).flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1)
    assert (res < 2 * TIGHT.tol).all(), res
    assert (z - x).norm() > 0.05 * x.norm()  # the blocks move z away from the bare injection
    torch.testing.assert_close(out.logits, decode_ref(model, z), atol=1e-5, rtol=1e-5)
    assert out.solver is not None and out.solver.iters == stats.iters


@pytest.mark.parametrize("k", [0, 1, 4])
def test_depth_equals_hand_run_picard_steps(k):
    picard = SolverConfig(method="picard", tol=1e-3, max_iter=30)
    model = tiny(fixed_point=dict(eval_solver=picard)).eval()
    ids = torch.randint(0, VOCAB, (2, 7))
    with torch.no_grad():
        out = model(ids, depth=k)
        x = embed_ref(model, ids)
        z = torch.zeros_like(x)
        for _ in range(k):
            z = f_ref(model, z, x)
    assert out.solver.iters == k and out.depth == k
    torch.testing.assert_close(out.logits, decode_ref(model, z), atol=1e-5, rtol=1e-5)
    if k == 0:
        assert (out.logits == 0).all()


def test_depth_runs_exactly_k_anderson_iterations():
    model = tiny(fixed_point=dict(eval_solver=TIGHT)).eval()
    ids = torch.randint(0, VOCAB, (2, 7))
    with torch.no_grad():
        assert model(ids, depth=2).solver.iters == 2
        out = model(ids)
        assert out.solver.iters > 2 and out.depth == out.solver.iters


def test_training_uses_the_train_solver():
    model = tiny(
        fixed_point=dict(
            train_solver=SolverConfig(method="picard", tol=0.0, max_iter=2),
            eval_solver=SolverConfig(method="picard", tol=0.0, max_iter=5),
        )
    )
    ids = torch.randint(0, VOCAB, (1, 4))
    assert model.train()(ids).solver.iters == 2
    assert model.eval()(ids).solver.iters == 5


# -----------------------------------------------------------------------------
# Head, gradients


def test_head_is_untied_from_the_embedding():
    model = tiny()
    assert model.head.weight is not model.embed.weight
    assert model.head.weight.data_ptr() != model.embed.weight.data_ptr()
    c = model.config
    assert model.num_params() - model.num_params(non_embedding=True) == c.vocab_size * c.dim
    ids = torch.randint(0, VOCAB, (1, 5))
    before = model.eval()(ids).logits
    with torch.no_grad():
        model.head.weight.mul_(2.0)  # decode doubles, the solve is untouched
    torch.testing.assert_close(model(ids).logits, 2.0 * before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backward", ["jfb", "phantom", "neumann", "adjoint"])
def test_forward_backward_gives_every_parameter_a_finite_gradient(backward):
    solver = SolverConfig(tol=1e-4, max_iter=30)
    model = tiny(fixed_point=dict(backward=backward, train_solver=solver)).train()
    ids = torch.randint(0, VOCAB, (2, 8))
    out = model(ids, labels=torch.roll(ids, -1, dims=1))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_jfb_gradient_is_one_application_of_f_at_the_fixed_point():
    model = tiny(fixed_point=dict(train_solver=TIGHT, backward="jfb")).train()
    ids = torch.randint(0, VOCAB, (2, 6))
    labels = torch.roll(ids, -1, dims=1)
    model(ids, labels=labels).loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with torch.no_grad():
        z_star, _ = model.equilibrium(ids)
    logits = decode_ref(model, f_ref(model, z_star, embed_ref(model, ids)))
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)


# -----------------------------------------------------------------------------
# Causality and generation


def test_causal_every_earlier_logit_ignores_a_later_token():
    model = tiny(fixed_point=dict(eval_solver=TIGHT)).eval()
    ids = torch.randint(0, VOCAB, (2, 12))
    changed = ids.clone()
    changed[:, 8] = (changed[:, 8] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-5, rtol=0)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_generation_by_recomputation_matches_the_uncached_path():
    model = tiny(fixed_point=dict(eval_solver=TIGHT)).eval()
    prompt = torch.randint(0, VOCAB, (2, 3))
    fast = model.generate(prompt, max_new_tokens=6, temperature=0.0)
    slow = model.generate(prompt, max_new_tokens=6, temperature=0.0, use_cache=False)
    assert fast.shape == (2, 9) and torch.equal(fast, slow)
    cache = model.new_cache()
    with torch.no_grad():
        model.extend(prompt, cache)
        new = torch.randint(0, VOCAB, (2, 2))
        got = model.extend(new, cache)
        want = model(torch.cat((prompt, new), dim=1)).logits[:, -2:]
    torch.testing.assert_close(got, want)


# -----------------------------------------------------------------------------
# Config


def test_config_round_trips_through_its_json_dict():
    solver = SolverConfig(method="picard", tol=1e-2, max_iter=3)
    cfg = DEQConfig(fixed_point=FixedPointConfig(train_solver=solver, backward="adjoint"))
    back = config_from_dict({"kind": "deq", **dataclasses.asdict(cfg)})
    assert back == cfg and isinstance(back.fixed_point.train_solver, SolverConfig)
    assert config_from_dict({"kind": "deq", **to_data(cfg)}) == cfg


def test_bad_config_and_depth_are_clear_errors():
    pattern = (
        r"^fixed_point\.backward: 'exact' is not one of 'jfb', 'neumann', 'adjoint', 'phantom'$"
    )
    with pytest.raises(ConfigError, match=pattern):
        DEQConfig(fixed_point=dict(backward="exact"))
    with pytest.raises(ConfigError, match=r"^deq: n_layers must be at least 1, got 0$"):
        build_model(kind="deq", n_layers=0)
    with pytest.raises(ValueError, match="depth must be >= 0, got -1"):
        tiny()(torch.zeros(1, 2, dtype=torch.long), depth=-1)


def test_freeze_converged_solver_runs():
    frozen = SolverConfig("anderson", tol=1e-4, max_iter=50, freeze_converged=True)
    model = tiny(fixed_point=dict(eval_solver=frozen)).eval()
    out = model(torch.randint(0, 10, (2, 6)))
    assert out.solver.converged.all()
