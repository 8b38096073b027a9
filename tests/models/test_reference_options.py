"""The model-level options that express the paper's code (attractor/models): the padded
vocabulary, the value-embedding gate input and table init (GPT, looped), and Parcae's
prelude norm, linear C, random state start and per-sequence depth draw, each against the
model's equations written out here or against the model without the option."""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from attractor.core.typed_config import ConfigError
from attractor.models import build_model

LOOPED = dict(
    vocab_size=50, dim=32, n_heads=4, n_prelude=1, n_recurrent=1, n_coda=1, mean_depth=3.0,
    backprop_depth=2, eval_depth=3, max_seq_len=32,
)  # fmt: skip


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("kind", ["attractor", "gpt", "looped", "deq"])
def test_padded_vocabulary_sizes_tables_and_logits_but_not_tokens(tiny_lm, kind):
    model = tiny_lm(kind, vocab_size=100, padded_vocab_size=128).eval()
    assert model.config.table_size == 128 and model.embed.weight.shape[0] == 128
    ids = torch.randint(0, 100, (2, 8))
    assert model(ids).logits.shape == (2, 8, 128)
    with torch.no_grad():  # make a padding column win the argmax over all 128 columns
        head = model.embed.weight if kind != "deq" else model.head.weight
        best = int(model(ids).logits[0, -1].argmax())
        head[120] = 1e3 * head[best]  # no input id reads row 120: only the logit moves
        assert int(model(ids).logits[0, -1].argmax()) == 120
    assert int(model.generate(ids[:, :3], 6).max()) < 100  # never sampled


def test_padded_vocabulary_below_vocab_is_an_error():
    with pytest.raises(ConfigError, match="padded_vocab_size 64 is below vocab_size 100"):
        build_model(kind="gpt", vocab_size=100, padded_vocab_size=64, dim=32, n_heads=4)


def test_gpt_value_gate_on_normed_input_matches_the_unrolled_stack(tiny_lm):
    model = tiny_lm("gpt", value_gate_input="normed", value_embed_std=1.0).eval()
    for ve in model.value_embeds.values():
        assert abs(float(ve.table.weight.detach().std()) - 1.0) < 0.05  # N(0, 1) tables
    ids = torch.randint(0, 257, (2, 10))
    x = model.embed(ids)
    for i, block in enumerate(model.blocks):  # by hand: the gate reads norm1 x
        ve = (
            model.value_embeds[str(i)](ids, block.norm1(x))
            if str(i) in model.value_embeds
            else None
        )
        h = x + block.attn(block.norm1(x), value_embed=ve)
        x = h + block.mlp(block.norm2(h))
    logits = model.norm(x) @ model.embed.weight.T
    torch.testing.assert_close(model(ids).logits, logits)
    residual = tiny_lm("gpt")
    assert (
        abs(float(next(iter(residual.value_embeds.values())).table.weight.detach().std()) - 0.02)
        < 0.005
    )


def looped(**fields):
    torch.manual_seed(0)
    return build_model(kind="looped", **{**LOOPED, **fields})


def test_prelude_norm_and_state_proj_as_written_out():
    model = looped(prelude_norm=True, state_proj=True, value_gate_input="normed").eval()
    with torch.no_grad():
        model.state_proj.weight.add_(0.1 * torch.randn(32, 32))
        model.prelude_norm.weight.uniform_(0.5, 1.5)
    ids = torch.randint(0, 50, (2, 7))
    blocks = [*model.prelude, *model.recurrent, *model.coda]

    def run(block, layer, h):
        ve = dict(model.value_embeds).get(str(layer))
        return block(h, value_embed=None if ve is None else partial(ve, ids))

    e = model.prelude_norm(run(blocks[0], 0, model.embed(ids)))
    dt = F.softplus(model.injection.dt_param)
    decay, u = torch.exp(-dt * model.injection.A_log.exp()), dt * (e @ model.injection.B.weight.T)
    h = torch.zeros_like(e)
    for _ in range(3):
        h = run(blocks[1], 1, decay * h + u)
    out = run(blocks[2], 2, h @ model.state_proj.weight.T)
    torch.testing.assert_close(model(ids).logits, model.norm(out) @ model.embed.weight.T)


def test_state_proj_starts_as_identity_and_trains_with_adamw():
    plain, with_c = looped(), looped(state_proj=True)
    torch.testing.assert_close(with_c.state_proj.weight, torch.eye(32))
    with_c.load_state_dict({**plain.state_dict(), "state_proj.weight": torch.eye(32)})
    ids = torch.randint(0, 50, (2, 7))
    torch.testing.assert_close(with_c.eval()(ids).logits, plain.eval()(ids).logits)
    assert with_c.state_proj.optim_group == "adamw"


def test_random_state_start_is_a_truncated_normal_at_init_std():
    model = looped(state_init="random", init_std=0.05, embed_scale=2.0)
    h0 = model.initial_state(torch.empty(64, 32, 32))
    assert float(h0.abs().max()) <= 2.0 * 3 * 0.05 + 1e-6
    assert abs(float(h0.std()) / 2.0 - 0.05 * 0.98658) < 0.001  # N truncated at 3 std
    ids = torch.randint(0, 50, (2, 7))
    model.eval()
    assert not torch.allclose(model(ids).logits, model(ids).logits)  # drawn every forward
    torch.testing.assert_close(model(ids, depth=0).logits, model(ids, depth=0).logits)


def test_per_sequence_depths_follow_the_paper_draw():
    model = looped(depth_draw="sequence", mean_depth=5.0, backprop_depth=2)
    torch.manual_seed(1)
    n, k = model.sample_row_depths(4000)
    torch.manual_seed(1)
    total = torch.poisson(torch.full((4000,), 5.0)).clamp_min(1)
    torch.testing.assert_close(n + k, total.long())
    assert bool((k == total.clamp_max(2)).all()) and int(n.min()) >= 0


def test_per_sequence_depths_run_each_row_to_its_own_depth(monkeypatch):
    """The batch forward equals each row alone at its own depth (values), and its gradient
    equals the mean of the rows' gradients with each row's own no-grad/grad split."""
    model = looped(depth_draw="sequence", backprop_depth=2).train()
    ids = torch.randint(0, 50, (2, 7))
    labels = torch.randint(0, 50, (2, 7))
    n, k = torch.tensor([0, 3]), torch.tensor([1, 2])  # rows run 1 and 5 recurrences
    monkeypatch.setattr(model, "sample_row_depths", lambda batch: (n, k))
    out = model(ids, labels=labels)
    assert out.depth == 3 + 2
    out.loss.backward()
    batch_grad = model.injection.B.weight.grad.clone()
    grads, logits = [], []
    for row, depth in ((0, 1), (1, 5)):
        model.zero_grad()
        single = model(ids[row : row + 1], labels=labels[row : row + 1], depth=depth)
        single.loss.backward()
        grads.append(model.injection.B.weight.grad.clone())
        logits.append(single.logits)
    torch.testing.assert_close(out.logits, torch.cat(logits), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch_grad, (grads[0] + grads[1]) / 2, atol=1e-6, rtol=1e-4)


def test_option_defaults_keep_our_models():
    c = looped().config
    assert (c.prelude_norm, c.state_proj, c.state_init, c.depth_draw) == (
        False, False, "zero", "batch",
    )  # fmt: skip
    assert (c.value_gate_input, c.value_embed_std, c.padded_vocab_size) == ("residual", None, None)
    with pytest.raises(ConfigError, match="state_init: 'like-init' is not one of"):
        build_model(kind="looped", **LOOPED, state_init="like-init")
    assert dataclasses.replace(c, depth_draw="sequence").depth_draw == "sequence"
