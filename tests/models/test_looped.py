"""Tests for attractor/models/looped.py: the looped LM against an unroll written out here
from its equations, truncated backprop, Poisson depths, and cached generation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from attractor.models.looped import LoopedConfig, LoopedLM

VOCAB = 64


def tiny(**fields) -> LoopedLM:
    """1 prelude / 2 recurrent / 1 coda blocks; value embeddings on layers 1 and 3 of the
    logical stack, i.e. on recurrent block 0 and on the coda block."""
    cfg = dict(
        vocab_size=VOCAB, dim=32, n_heads=4, n_prelude=1, n_recurrent=2, n_coda=1,
        mean_depth=4.0, backprop_depth=2, eval_depth=3, max_seq_len=64,
    )  # fmt: skip
    model = LoopedLM(LoopedConfig(**{**cfg, **fields}))
    with torch.no_grad():  # move the injection off its identity start, so it matters
        inj = model.injection
        inj.A_log.normal_(0.0, 0.5)
        inj.dt_param.normal_(0.0, 1.0)
        inj.B.weight.add_(0.2 * torch.randn_like(inj.B.weight))
    return model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -----------------------------------------------------------------------------
# Independent reference: the model's equations, written out with its own weights


def value_embed_ref(model, layer, ids, h):
    """v <- V[ids] * 2 sigmoid(W_g h[:, :, :32]) per KV head, or None."""
    if str(layer) not in model.value_embeds:
        return None
    ve = model.value_embeds[str(layer)]
    rows = ve.table.weight[ids]  # (B, T, Hkv*Dh)
    g = 2.0 * torch.sigmoid(h[..., : ve.gate_channels] @ ve.gate.weight.T)  # (B, T, Hkv)
    B, T, _ = rows.shape
    return (rows.view(B, T, ve.n_kv_heads, -1) * g[..., None]).view(B, T, -1)


def run_blocks_ref(model, blocks, first_layer, ids, h):
    for i, block in enumerate(blocks):
        h = block(h, value_embed=value_embed_ref(model, first_layer + i, ids, h))
    return h


def reference_logits(model, ids, depth, free=0):
    """e = P(E[x]); h = 0; depth times h = R(exp(-dt A) h + dt B e) (the first `free` without
    gradient); logits = E . rmsnorm(C(h)); depth 0 decodes C(dt B e)."""
    c = model.config
    inj = model.injection
    e = run_blocks_ref(model, model.prelude, 0, ids, c.embed_scale * model.embed.weight[ids])
    dt = torch.log1p(torch.exp(inj.dt_param))
    decay = torch.exp(-dt * torch.exp(inj.A_log))
    u = dt * (e @ inj.B.weight.T)
    h = torch.zeros_like(e) if depth else u
    for t in range(depth):
        with torch.set_grad_enabled(t >= free and torch.is_grad_enabled()):
            h = run_blocks_ref(model, model.recurrent, c.n_prelude, ids, decay * h + u)
    h = run_blocks_ref(model, model.coda, c.n_prelude + c.n_recurrent, ids, h)
    w = model.norm.weight
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + model.norm.eps) * w
    return h @ model.embed.weight.T


# -----------------------------------------------------------------------------
# Forward, depth and gradients


@pytest.mark.parametrize("value_embeds", [True, False])
@pytest.mark.parametrize("depth", [0, 1, 3, None])
def test_eval_depth_equals_the_hand_written_unroll(value_embeds, depth):
    model = tiny(value_embeds=value_embeds).eval()
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        out = model(ids, depth=depth)
        expected = model.config.eval_depth if depth is None else depth
        ref = reference_logits(model, ids, expected)
    assert out.depth == expected
    assert out.solver is None
    torch.testing.assert_close(out.logits, ref, atol=1e-5, rtol=1e-5)


def test_depth_changes_the_output():
    model = tiny().eval()
    ids = torch.randint(0, VOCAB, (1, 6))
    with torch.no_grad():
        logits = [model(ids, depth=k).logits for k in (0, 1, 2)]
    assert not torch.allclose(logits[0], logits[1]) and not torch.allclose(logits[1], logits[2])


def test_causal_every_earlier_logit_ignores_a_later_token():
    model = tiny().eval()
    ids = torch.randint(0, VOCAB, (2, 12))
    changed = ids.clone()
    changed[:, 8] = (changed[:, 8] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("value_embeds", [True, False])
def test_training_forward_backward_gives_every_parameter_a_finite_gradient(value_embeds):
    model = tiny(value_embeds=value_embeds).train()
    ids = torch.randint(0, VOCAB, (2, 10))
    out = model(ids, labels=torch.roll(ids, -1, dims=1))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name


def test_gradient_flows_through_the_last_k_recurrences_only(monkeypatch):
    model = tiny(backprop_depth=2).train()
    monkeypatch.setattr(model, "sample_depth", lambda: 5)
    calls = {"forward": 0, "forward_with_grad": 0, "backward": 0}

    def on_forward(module, args, output):
        calls["forward"] += 1
        calls["forward_with_grad"] += output.requires_grad

    def on_backward(module, grad_in, grad_out):
        calls["backward"] += 1

    block = model.recurrent[1]
    block.register_forward_hook(on_forward)
    block.register_full_backward_hook(on_backward)
    ids = torch.randint(0, VOCAB, (2, 7))
    labels = torch.roll(ids, -1, dims=1)
    out = model(ids, labels=labels)
    out.loss.backward()
    assert out.depth == 5
    assert calls == {"forward": 5, "forward_with_grad": 2, "backward": 2}

    # the same gradient as a manual truncated unroll: 3 steps without gradient, then 2 with
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    loss = F.cross_entropy(reference_logits(model, ids, 5, free=3).flatten(0, 1), labels.flatten())
    loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)

    # and not the gradient of the full unroll (which the test can tell apart)
    model.zero_grad()
    full = F.cross_entropy(reference_logits(model, ids, 5).flatten(0, 1), labels.flatten())
    full.backward()
    assert not torch.allclose(
        got["recurrent.0.mlp.w1.weight"], model.recurrent[0].mlp.w1.weight.grad
    )


def test_short_training_depth_backpropagates_through_every_recurrence(monkeypatch):
    model = tiny(backprop_depth=4).train()
    monkeypatch.setattr(model, "sample_depth", lambda: 2)
    ids = torch.randint(0, VOCAB, (1, 5))
    model(ids, labels=ids).loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    F.cross_entropy(reference_logits(model, ids, 2).flatten(0, 1), ids.flatten()).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)


def test_training_depth_is_poisson_with_mean_mu():
    model = tiny(
        mean_depth=3.0, value_embeds=False, dim=8, n_heads=2, n_prelude=0, n_recurrent=1, n_coda=0
    ).train()
    ids = torch.randint(0, VOCAB, (1, 2))
    depths = []
    with torch.no_grad():
        for _ in range(150):
            depths.append(model(ids).depth)
    depths = torch.tensor(depths, dtype=torch.float64)
    assert depths.min() >= 1
    # mean of max(1, Poisson(3)) = 3 + P(0) = 3.05; its standard error here is ~0.14
    assert abs(depths.mean().item() - 3.05) < 0.45
    assert 1.5 < depths.var().item() < 5.0  # Poisson: variance ~ mean
    assert len(set(depths.tolist())) >= 5
    model.eval()
    assert model(ids).depth == model.config.eval_depth


def test_small_mean_depth_is_clamped_to_one():
    model = tiny(mean_depth=0.5)
    depths = torch.tensor([model.sample_depth() for _ in range(2000)], dtype=torch.float64)
    assert depths.min() == 1
    # E[max(1, Poisson(0.5))] = 0.5 + exp(-0.5) = 1.107
    assert abs(depths.mean().item() - 1.107) < 0.06


# -----------------------------------------------------------------------------
# Generation with a cache per (recurrence step, block)


def test_cached_extend_equals_recomputation():
    model = tiny().eval()
    ids = torch.randint(0, VOCAB, (2, 5))
    cache = model.new_cache()
    assert len(cache.recurrent) == model.config.eval_depth
    with torch.no_grad():
        torch.testing.assert_close(model.extend(ids, cache), model(ids).logits, atol=1e-4, rtol=0)
        for chunk in (1, 3, 1):  # one token, then several at once (the masked path)
            new = torch.randint(0, VOCAB, (2, chunk))
            ids = torch.cat((ids, new), dim=1)
            got = model.extend(new, cache)
            torch.testing.assert_close(got, model(ids).logits[:, -chunk:], atol=1e-4, rtol=0)
    assert cache.prelude[0].length == ids.size(1)


def test_cache_of_another_depth_equals_that_depth():
    model = tiny().eval()
    ids = torch.randint(0, VOCAB, (1, 6))
    with torch.no_grad():
        got = model.extend(ids, model.new_cache(depth=5))
        torch.testing.assert_close(got, model(ids, depth=5).logits, atol=1e-4, rtol=0)


def test_cached_generation_equals_recomputed_generation():
    model = tiny().eval()
    prompt = torch.randint(0, VOCAB, (2, 4))
    fast = model.generate(prompt, max_new_tokens=10, temperature=0.0)
    slow = model.generate(prompt, max_new_tokens=10, temperature=0.0, use_cache=False)
    assert fast.shape == (2, 14)
    assert torch.equal(fast, slow)


# -----------------------------------------------------------------------------
# Config


def test_bad_configs_and_depth_are_clear_errors():
    with pytest.raises(ValueError, match="n_recurrent >= 1"):
        LoopedConfig(n_recurrent=0)
    with pytest.raises(ValueError, match="backprop_depth >= 1"):
        LoopedConfig(backprop_depth=0)
    with pytest.raises(ValueError, match="looped: depth must be >= 0, got -1"):
        tiny()(torch.zeros(1, 2, dtype=torch.long), depth=-1)


def test_config_round_trips_through_a_dict():
    cfg = tiny().config
    assert LoopedConfig(**dataclasses.asdict(cfg)) == cfg
