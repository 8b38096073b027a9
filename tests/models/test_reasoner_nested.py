"""The paper's reasoner scheme (attractor/models/reasoner_nested.py): one supervision step
against a loop of the same cycles written here from net calls (with a textbook Anderson of
its own), which net applications carry the gradient, train/eval equality, and the paper
preset's network against the numbers of the paper's code.
"""

import math

import pytest
import torch

from attractor.models import build_model
from attractor.models.grid import trunc_normal_
from attractor.train.optim import OptimConfig, SignSGD, make_optimizer, param_groups

SIX = dict(side=6, box_rows=2, box_cols=3, vocab_size=8)  # 6 x 6 Sudoku: tokens 0..7
TINY = dict(dim=32, n_heads=2, **SIX)
H, K = 3, 2  # cycles, phantom z-steps


def nested(solver=None, seed: int = 0, **fields):
    """reasoner-cpu at width 32 in float64, with `solver` in training and evaluation."""
    torch.manual_seed(seed)
    if solver is not None:
        fields["fixed_point"] = dict(train_solver=solver, eval_solver=solver)
    model = build_model("reasoner-cpu", **{**TINY, **fields}).double()
    assert model.config.cycles == fields.get("cycles", H)
    assert model.config.fixed_point.backward_steps == K
    return model


def puzzle_inputs(batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 8, (batch, 36), generator=g)


def random_carry(model, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    shape = (batch, 2, model.config.max_seq_len, model.config.dim)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def probe_loss(logits: torch.Tensor, halt: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    w = torch.randn(logits.shape, generator=g, dtype=logits.dtype)
    return (logits * w).sum() + 0.3 * halt.sum()


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def textbook_anderson(f, z0: torch.Tensor, m: int, evals: int) -> torch.Tensor:
    """The iterate whose image is the evals-th evaluation of f by type-II Anderson over the
    last m pairs (x_{j+1} = f(x_j) - dF gamma, gamma = lstsq(dG, g_j) per sample; Walker
    and Ni 2011, difference form), without regularisation."""
    xs, fs, x = [], [], z0
    for j in range(evals):
        fx = f(x)
        if j == evals - 1:
            return x
        xs, fs = (xs + [x])[-m:], (fs + [fx])[-m:]
        if len(xs) == 1:
            x = fx
            continue
        b = x.shape[0]
        X = torch.stack([v.reshape(b, -1) for v in xs], dim=2)  # (B, D, n)
        F = torch.stack([v.reshape(b, -1) for v in fs], dim=2)
        G = F - X
        dG, dF = G[..., 1:] - G[..., :-1], F[..., 1:] - F[..., :-1]
        rows = []
        for i in range(b):
            gamma = torch.linalg.lstsq(dG[i], G[i, :, -1:]).solution  # (n - 1, 1)
            rows.append(F[i, :, -1] - (dF[i] @ gamma).squeeze(1))
        x = torch.stack(rows).view_as(x)
    raise ValueError("evals must be at least 1")


def hand_step(model, inputs, carry, preimage, grad_last: bool = True):
    """One supervision step written from net calls: H cycles of (the solver's pre-image,
    K steps z <- net(z, y + x), y <- net(y, z)), only the last cycle's K + 1 applications
    with gradient. Returns logits, halting logits and the carried (y, z)."""
    x = model.embed(inputs)
    y, z = carry.unbind(dim=1)
    for cycle in range(H):
        with torch.no_grad():
            z = preimage(lambda v, y=y: model.net(v, y + x), z)
        with torch.set_grad_enabled(grad_last and cycle == H - 1):
            for _ in range(K):
                z = model.net(z, y + x)
            y = model.net(y, z)
    logits, halt = model.readout(y)
    return logits, halt, torch.stack((y, z), dim=1)


def picard_preimage(depth: int):
    def pre(f, z):
        for _ in range(depth - 1):
            z = f(z)
        return z

    return pre


@pytest.mark.parametrize("method", ["picard", "anderson"])
@pytest.mark.parametrize("depth", [1, 3, 6])
def test_one_supervision_step_equals_the_hand_written_cycles(method, depth):
    """float64, each solve cut to `depth` iterations: logits, halting logits and carry
    within 1e-6 of the loop above (Picard: f^(depth-1); Anderson: the textbook one), and
    the same parameter gradients."""
    if method == "picard":
        solver = dict(method="picard")
        pre = picard_preimage(depth)
    else:
        solver = dict(method="anderson", regularization=0.0)
        pre = lambda f, z: textbook_anderson(f, z, 5, depth)  # noqa: E731
    model = nested(solver).train()
    inputs, carry = puzzle_inputs(), random_carry(model)
    out = model(inputs, carry=carry, depth=depth)
    assert out.depth == depth and out.solver.iters == H * depth
    probe_loss(out.logits, out.halt_logits).backward()
    got = grads(model)
    model.zero_grad(set_to_none=True)

    logits, halt, state = hand_step(model, inputs, carry, pre)
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.halt_logits, halt, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.carry, state, rtol=0, atol=1e-6)
    probe_loss(logits, halt).backward()
    want = grads(model)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-9, msg=name)


def test_the_solver_stops_on_the_batch_maximum_relative_to_the_image():
    """The preset's own stopping rule (one cycle, so one solve): it ends at the first
    iteration (from min_iter on) where max over the batch of |f(z) - z| / |f(z)| < tol;
    recomputed here from a hand-run Anderson of the same solve."""
    model = nested(dict(tol=0.05, min_iter=2, max_iter=30, regularization=0.0), cycles=1)
    inputs, carry = puzzle_inputs(3), random_carry(model, 3)
    with torch.no_grad():
        out = model.eval()(inputs, carry=carry)
        x = model.embed(inputs)
        y, z = carry.unbind(dim=1)

        def f(v):
            return model.net(v, y + x)

        rel = []
        for evals in range(1, 31):
            v = textbook_anderson(f, z, 5, evals)
            fv = f(v)
            rel.append(float(((fv - v).flatten(1).norm(dim=1) / fv.flatten(1).norm(dim=1)).max()))
    first = next(j for j, r in enumerate(rel) if j >= 1 and r < 0.05) + 1
    assert 2 < first < 30  # the rule, not a bound, ends the solve
    assert out.depth == out.solver.iters == first
    assert out.solver.trace == pytest.approx(rel[:first], rel=1e-6)


def test_gradients_reach_only_the_last_cycles_three_net_applications():
    """Forward hooks on net: every application runs without gradient except the last
    K + 1 = 3 (the last cycle's two z-steps and its y-update). Autograd through exactly
    those three calls, written here from the states the hooks saw, gives the model's
    parameter gradients."""
    model = nested().train()  # the preset's own Anderson solve
    inputs, carry = puzzle_inputs(), random_carry(model)
    calls = []

    def hook(module, args, output):
        calls.append((torch.is_grad_enabled(), output.requires_grad, args[0].detach()))

    handle = model.net.register_forward_hook(hook)
    out = model(inputs, carry=carry)
    handle.remove()
    probe_loss(out.logits, out.halt_logits).backward()
    got = grads(model)
    model.zero_grad(set_to_none=True)

    flags = [(g, r) for g, r, _ in calls]
    assert len(calls) == out.solver.iters + (H - 1) * (K - 1 + 1) + K + 1
    assert flags[-3:] == [(True, True)] * 3
    assert flags[:-3] == [(False, False)] * (len(calls) - 3)
    z_pre, y_prev = calls[-3][2], calls[-1][2]  # net(z_pre, y + x) ... y = net(y_prev, z)
    x = model.embed(inputs)
    z = model.net(z_pre, y_prev + x)
    z = model.net(z, y_prev + x)
    logits, halt = model.readout(model.net(y_prev, z))
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=1e-12)
    probe_loss(logits, halt).backward()
    want = grads(model)
    assert got.keys() == want.keys() and got["embed.tokens.weight"].abs().sum() > 0
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12, msg=name)


def test_training_and_evaluation_decode_and_carry_the_same_state():
    model = nested()
    inputs, carry = puzzle_inputs(), random_carry(model)
    trained = model.train()(inputs, carry=carry)
    with torch.no_grad():
        evaluated = model.eval()(inputs, carry=carry)
    torch.testing.assert_close(trained.logits.detach(), evaluated.logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(trained.carry, evaluated.carry, rtol=0, atol=1e-12)


def test_the_scheme_needs_a_phantom_backward_and_a_cycle():
    where = "^reasoner-cpu: reasoner_nested: "
    with pytest.raises(ValueError, match=where + "the scheme .* fixed_point.backward to phantom"):
        build_model("reasoner-cpu", fixed_point=dict(backward="jfb"))
    with pytest.raises(ValueError, match=where + r"cycles \(H\) must be at least 1, got 0$"):
        build_model("reasoner-cpu", cycles=0)


# ----------------------------------------------------------------------------- the paper preset


def reference_params(vocab: int, layers: int, dim: int = 512, hidden: int = 1536) -> int:
    """The paper code's parameter count: per block q, k, v, o (dim^2 each) and SwiGLU's
    three matrices; token embedding and lm_head (vocab x dim each); its q_head (dim -> 2,
    with bias). Its puzzle embedding is a buffer, not a parameter."""
    return layers * (4 * dim * dim + 3 * dim * hidden) + 2 * vocab * dim + 2 * dim + 2


@pytest.mark.parametrize(
    ("preset", "layers", "geometry"),
    [
        ("reasoner-27m", 8, dict(vocab_size=11, side=9, box_rows=3, box_cols=3)),
        ("reasoner-27m", 8, dict(vocab_size=6, side=30, box_rows=0, box_cols=0)),
        ("reasoner-7m", 2, dict(vocab_size=11, side=9, box_rows=3, box_cols=3)),
    ],
)
def test_paper_preset_counts_the_reference_parameters(preset, layers, geometry):
    """Ours = the reference's, less its unused q_continue output (513), plus the puzzle
    embedding (512, a parameter here): 27.28M for Sudoku, 27.27M for 30 x 30 mazes."""
    with torch.device("meta"):
        model = build_model(preset, **geometry)
    ref = reference_params(geometry["vocab_size"], layers)
    assert model.num_params() == ref - 513 + 512
    assert abs(ref / 1e6 - (27.27 if layers == 8 else 6.83)) < 0.006


def test_paper_preset_network_is_the_references():
    torch.manual_seed(0)
    model = build_model("reasoner-7m")
    names = dict(model.named_parameters())
    assert not any("norm" in n for n in names)  # RMSNorms without gains, none before the logits
    assert not any(
        n.startswith("embed.") and n not in ("embed.tokens.weight", "embed.puzzle.weight")
        for n in names
    )  # fmt: skip  (rotary only: no position tables)
    block = model.net.blocks[0]
    assert block.norm1.eps == 1e-5 and block.norm1.weight is None
    assert model.config.qk_norm == "none" and block.attn.q_norm is None
    assert block.mlp.w1.out_features == 1536
    prefix = model.embed.prefix_rows()
    assert prefix.shape == (16, 512) and not prefix.any()  # slot 0 starts at zero, 1..15 zero
    with torch.no_grad():
        model.embed.puzzle.weight.fill_(1.0)
    prefix = model.embed.prefix_rows()
    assert prefix[0].eq(1.0).all() and not prefix[1:].any()
    # LeCun truncated normal: std 1 / sqrt(fan_in), nothing beyond 2 / 0.8796 of it
    for w in (block.attn.wq.weight, block.mlp.w2.weight, model.readout.out.weight):
        std = 1.0 / math.sqrt(w.shape[1])
        assert w.std().item() == pytest.approx(std, rel=0.05)
        assert w.abs().max().item() <= 2.0 * std / 0.8796
    assert model.readout.halt.weight.eq(0).all() and model.readout.halt.bias.eq(-5).all()


def test_truncated_normal_has_the_asked_standard_deviation():
    torch.manual_seed(0)
    t = trunc_normal_(torch.empty(400_000, dtype=torch.float64), 0.3)
    assert t.std().item() == pytest.approx(0.3, rel=0.01)
    # truncated at 2 s with s = 0.3 / std(N(0,1) | |N| <= 2), computed here by quadrature
    u = torch.linspace(-2, 2, 200_001, dtype=torch.float64)
    pdf = torch.exp(-u * u / 2)
    s = 0.3 / math.sqrt(float((u * u * pdf).sum() / pdf.sum()))
    assert t.abs().max().item() <= 2 * s and t.abs().max().item() > 1.99 * s


@pytest.mark.parametrize("name", ["adamw", "muon-ns", "muon"])
def test_puzzle_embedding_trains_by_sign_descent(name):
    """The puzzle embedding is the "signsgd" group under every optimizer name, with its own
    lr and decay; a step is p (1 - lr wd) - lr sign(g)."""
    model = nested(prefix="puzzle", n_prefix=4).float()
    cfg = OptimConfig(name=name, lr=1e-3, signsgd_lr=1e-2, signsgd_weight_decay=1.0)
    groups = {g["name"]: g["params"] for g in param_groups(model, cfg)}
    assert [p is model.embed.puzzle.weight for p in groups["signsgd"]] == [True]
    opt = make_optimizer(model, cfg)
    assert isinstance(opt.optimizers["signsgd"], SignSGD)
    owners = [k for k, o in opt.optimizers.items() for g in o.param_groups for p in g["params"]
              if p is model.embed.puzzle.weight]  # fmt: skip
    assert owners == ["signsgd"]
    with torch.no_grad():
        model.embed.puzzle.weight.normal_()
    before = model.embed.puzzle.weight.detach().clone()
    out = model.train()(puzzle_inputs())
    probe_loss(out.logits, out.halt_logits).backward()
    g = model.embed.puzzle.weight.grad.clone()
    assert g.abs().min() > 0
    opt.set_lr_factor(0.5)  # a schedule reaches the group: lr 5e-3
    opt.step()
    want = before * (1 - 5e-3 * 1.0) - 5e-3 * torch.sign(g)
    torch.testing.assert_close(model.embed.puzzle.weight.detach(), want, rtol=0, atol=1e-7)
