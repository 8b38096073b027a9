"""AttractorLM against independent references: hand-run iterations of its own head,
full recomputation for the cached head, and perturbation tests for causality."""

import pytest
import torch

import attractor as at
from attractor.models.attractor import AttractorConfig, AttractorLM

TIGHT = at.SolverConfig("anderson", tol=1e-6, max_iter=100)


def tiny(**kw) -> AttractorLM:
    torch.manual_seed(0)
    fields = dict(
        vocab_size=97,
        dim=32,
        n_heads=4,
        n_backbone=2,
        n_head_layers=1,
        max_seq_len=64,
        train_solver=TIGHT,
        eval_solver=TIGHT,
    )
    return AttractorLM(AttractorConfig(**{**fields, **kw}))


def ids(b=2, t=12, seed=1):
    return torch.randint(0, 97, (b, t), generator=torch.Generator().manual_seed(seed))


def test_steps_zero_decodes_the_proposal():
    model = tiny().eval()
    x = ids()
    with torch.no_grad():
        out = model(x, steps=0)
        expected = model.decode(model.proposal(x))
    assert out.solver is None
    assert torch.equal(out.logits, expected)


def test_steps_k_runs_exactly_k_picard_iterations_of_the_head():
    picard = at.SolverConfig("picard", tol=1e-6, max_iter=100)
    model = tiny(eval_solver=picard).eval()
    x = ids()
    with torch.no_grad():
        y0 = model.proposal(x)
        y = y0
        for _ in range(3):
            y = model.head(y, y0)  # f(y; y0) = y0 + H(y + y0) - (y + y0), by hand below
        out = model(x, steps=3)
        h = y0 + y0
        by_hand = y0 + model.head.stack(h) - h
    assert out.solver.iters == 3
    assert torch.allclose(out.logits, model.decode(y), atol=1e-6)
    assert torch.allclose(model.head(y0, y0), by_hand, atol=1e-6)


def test_equilibrium_is_a_fixed_point_of_the_head():
    model = tiny().eval()
    x = ids()
    with torch.no_grad():
        y0 = model.proposal(x)
        y, stats = model.equilibrium(y0)
        r = (model.head(y, y0) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    assert stats.converged.all() and float(r.max()) < 1e-5


@pytest.mark.parametrize("injection", ["additive", "concat", "initial"])
def test_changing_a_future_token_changes_no_earlier_logit(injection):
    model = tiny(injection=injection).eval()
    x = ids(t=16)
    x2 = x.clone()
    x2[:, 10] = (x2[:, 10] + 1) % 97
    with torch.no_grad():
        a, b = model(x).logits, model(x2).logits
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-5)
    assert not torch.allclose(a[:, 10:], b[:, 10:], atol=1e-3)


def test_appending_tokens_never_changes_the_cached_equilibria():
    model = tiny().eval()
    x = ids(t=12)
    cache = model.new_cache()
    with torch.no_grad():
        model.extend(x[:, :8], cache)
        before = [(c.k.clone(), c.v.clone()) for c in cache.head + cache.backbone]
        for t in range(8, 12):
            model.extend(x[:, t : t + 1], cache)
    after = [(c.k, c.v) for c in cache.head + cache.backbone]
    for (k0, v0), (k1, v1) in zip(before, after, strict=True):
        assert k1.shape[2] == 12
        assert torch.equal(k1[:, :, :8], k0) and torch.equal(v1[:, :, :8], v0)


def test_cached_generation_equals_full_recomputation():
    model = tiny().eval()
    prompt = ids(t=6)
    fast = model.generate(prompt, max_new_tokens=20)
    slow = model.generate(prompt, max_new_tokens=20, use_cache=False)
    assert torch.equal(fast, slow)
    cache, pieces = model.new_cache(), []
    with torch.no_grad():
        pieces.append(model.extend(fast[:, :6], cache))
        for t in range(6, fast.size(1)):
            pieces.append(model.extend(fast[:, t : t + 1], cache))
        full = model(fast).logits
    assert (torch.cat(pieces, dim=1) - full).abs().max() < 1e-4


@pytest.mark.parametrize(
    "kw",
    [
        dict(backward="jfb"),
        dict(backward="neumann"),
        dict(backward="adjoint"),
        dict(backward="phantom", backward_steps=2, backward_damping=0.5),
        dict(injection="concat"),
        dict(start="zero"),
        dict(start="noise"),
        dict(tied_head=False),
        dict(n_head_layers=2, mlp="swiglu"),
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_training_step_reaches_every_parameter(kw):
    model = tiny(**kw).train()
    x = ids()
    out = model(x, labels=torch.roll(x, -1, dims=1))
    assert torch.isfinite(out.loss) and out.solver is not None
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_initial_only_injection_gives_the_backbone_no_implicit_gradient():
    # f(y) = H(y) does not depend on y0, and y* does not depend on the start: exactly zero
    model = tiny(injection="initial").train()
    x = ids()
    model(x, labels=x).loss.backward()
    assert all(float(p.grad.abs().sum()) == 0 for p in model.backbone.parameters())


def test_monitor_reports_solver_gates_and_spectral_radius():
    model = tiny(gate_init=0.5, gate_max=1.0).eval()
    report = model.monitor(ids(), spectral=True)
    assert report["iters"] >= 1 and report["residual"] < 1e-6 and report["converged"] == 1.0
    assert report["shift"] > 0
    assert report["gates"] == [pytest.approx((0.5, 0.5), abs=1e-6)]
    assert 0 < report["spectral_radius"] < 1


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown injection 'sum'"):
        AttractorConfig(injection="sum")
    with pytest.raises(ValueError, match="unknown start"):
        AttractorConfig(start="random")
    with pytest.raises(ValueError, match="unknown backward"):
        AttractorConfig(backward="exact")


FREEZE = at.SolverConfig("anderson", tol=1e-5, max_iter=100, freeze_converged=True)


def test_per_position_solve_is_exactly_causal():
    model = tiny(eval_solver=FREEZE).eval().double()
    x = ids(t=16)
    x2 = x.clone()
    x2[:, 12] = (x2[:, 12] + 1) % 97
    with torch.no_grad():
        a, b = model(x).logits, model(x2).logits
    # every position stops on its own residual, which depends on no later token
    assert torch.allclose(a[:, :12], b[:, :12], rtol=0, atol=1e-12)


def test_batch_costs_the_sum_of_its_sequences_depths():
    model = tiny(eval_solver=FREEZE, init_std=0.1).eval().double()  # depths 10 to 13 here
    x = torch.cat([ids(b=1, t=10, seed=s) for s in range(5)])
    rows = []
    hook = model.head.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    with torch.no_grad():
        solo = []
        for i in range(5):
            rows.clear()
            model(x[i : i + 1])
            solo.append(sum(rows))  # f-evaluations of sequence i solved alone
        rows.clear()
        out = model(x)
    hook.remove()
    depth = out.solver.sample_iters.view(5, 10).amax(dim=1)  # per-sequence depth
    assert depth.tolist() == solo
    assert sum(rows) == sum(solo)  # the batch pays the sum of depths ...
    assert max(solo) > min(solo) and sum(rows) < 5 * out.solver.iters  # ... not B x the max
