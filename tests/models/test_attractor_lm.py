"""AttractorLM against references written out here from its equations (docs/method.md
section 2.1) with the model's own weights: the backbone, the map f(y; y0) = y0 + D(y + y0)
(explicit softmax attention, squared-ReLU or SwiGLU MLP, gates g_max sigmoid(rho)), the
decode, and the fixed point as a plain float64 Picard loop. Besides: full recomputation
for the cached head, perturbations for causality, and typed-config errors."""

import math

import pytest
import torch
import torch.nn.functional as F

import attractor as at
from attractor.core.typed_config import ConfigError
from attractor.models.attractor import AttractorConfig, AttractorLM

TIGHT = at.SolverConfig("anderson", tol=1e-6, max_iter=100)
VOCAB = 97


def tiny(fixed_point: dict | None = None, **fields) -> AttractorLM:
    """A seeded 2+1-block, width-32 model whose solve is TIGHT in training and evaluation
    (`fixed_point` entries merged over that)."""
    torch.manual_seed(0)
    shape = dict(vocab_size=VOCAB, dim=32, n_heads=4, n_backbone=2, n_head_layers=1, max_seq_len=64)
    solve = {"train_solver": TIGHT, "eval_solver": TIGHT, **(fixed_point or {})}
    return at.build_model(kind="attractor", fixed_point=solve, **{**shape, **fields})


def ids(b=2, t=12, seed=1):
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def perturb(model: AttractorLM) -> AttractorLM:
    """Norm weights away from 1 and gates away from g_init (each channel its own), so that a
    reference that skips a norm or a gate does not agree by accident."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "norm1" in name or "norm2" in name:
                p.copy_(torch.empty_like(p).uniform_(0.6, 1.4, generator=g))
            elif "rho_" in name:
                p.add_(torch.empty_like(p).uniform_(-1.0, 1.0, generator=g))
    return model


# -----------------------------------------------------------------------------
# Independent reference: every piece written out from the weights, nothing of the package


def rms_ref(x, w, eps=1e-6):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_ref(x, base=10000.0):
    """Rotary as complex multiplication (x1 + i x2) exp(i p theta_j), theta_j = base^(-2j/Dh),
    for positions p = 0 .. T-1 of x (B, H, T, Dh)."""
    d = x.size(-1) // 2
    theta = base ** (-2.0 * torch.arange(d, dtype=torch.float64) / x.size(-1))
    angles = torch.outer(torch.arange(x.size(-2), dtype=torch.float64), theta)
    z = torch.complex(x[..., :d], x[..., d:]) * torch.polar(torch.ones_like(angles), angles)
    return torch.cat((z.real, z.imag), dim=-1)


def attention_ref(attn, x):
    """Wo softmax(R(n(q)) R(n(k))^T / sqrt(Dh) + causal mask) v, heads written out."""
    B, T, C = x.shape
    H, Dh = attn.n_heads, attn.head_dim
    q = (x @ attn.wq.weight.T).view(B, T, H, Dh)
    k = (x @ attn.wk.weight.T).view(B, T, H, Dh)
    v = (x @ attn.wv.weight.T).view(B, T, H, Dh).transpose(1, 2)
    q = rotate_ref(rms_ref(q, attn.q_norm.weight).transpose(1, 2))
    k = rotate_ref(rms_ref(k, attn.k_norm.weight).transpose(1, 2))
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)  # (B, H, T, T)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return (weights @ v).transpose(1, 2).reshape(B, T, C) @ attn.wo.weight.T


def mlp_ref(mlp, x):
    """relu(W1 x)^2 through W2, or SwiGLU silu(W1 x) * W3 x through W2."""
    if hasattr(mlp, "w3"):
        return (F.silu(x @ mlp.w1.weight.T) * (x @ mlp.w3.weight.T)) @ mlp.w2.weight.T
    return torch.relu(x @ mlp.w1.weight.T).pow(2) @ mlp.w2.weight.T


def block_ref(block, x, gated=False):
    """h = x + g_a Attn(norm1 x); out = h + g_m MLP(norm2 h); g = g_max sigmoid(rho) (or 1)."""
    g_a = block.gate_max * torch.sigmoid(block.rho_attn) if gated else 1.0
    g_m = block.gate_max * torch.sigmoid(block.rho_mlp) if gated else 1.0
    h = x + g_a * attention_ref(block.attn, rms_ref(x, block.norm1.weight))
    return h + g_m * mlp_ref(block.mlp, rms_ref(h, block.norm2.weight))


def f_ref(model, y, y0):
    """The attractor map of paper Table 4: additive y0 + H(y + y0) - (y + y0), concat
    H(W [y; y0]), initial H(y); H the K gated blocks."""
    injection = model.config.injection
    if injection == "additive":
        h = y + y0
    elif injection == "concat":
        h = torch.cat((y, y0), dim=-1) @ model.head.mix.weight.T
    else:
        h = y
    out = h
    for block in model.head.blocks:
        out = block_ref(block, out, gated=True)
    return y0 + out - h if injection == "additive" else out


def proposal_ref(model, x):
    """y0 = B(s E[x]): the backbone's plain pre-norm blocks."""
    h = model.config.embed_scale * model.embed.weight[x]
    for block in model.backbone:
        h = block_ref(block, h)
    return h


def decode_ref(model, y):
    """E . RMSNorm(y) (tied) or W_out RMSNorm(y)."""
    w = model.embed.weight if model.lm_head is None else model.lm_head.weight
    return rms_ref(y, model.norm.weight) @ w.T


def picard_ref(model, y0, tol=1e-10, max_iter=5000):
    """y <- f(y) from y0, no solver and no autograd, until |f(y) - y| / |y| < tol for every
    sequence; returns the iterate and how many steps it took."""
    y = y0
    for n in range(1, max_iter + 1):
        fy = f_ref(model, y, y0)
        r = (fy - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
        y = fy
        if float(r.max()) < tol:
            return y, n
    raise AssertionError(f"the reference Picard loop did not reach {tol} in {max_iter} steps")


# -----------------------------------------------------------------------------
# The map, the proposal, the decode


@pytest.mark.parametrize(
    "fields",
    [
        dict(),
        dict(injection="concat"),
        dict(injection="initial"),
        dict(n_head_layers=2, mlp="swiglu"),
    ],
    ids=["additive", "concat", "initial", "2-blocks-swiglu"],
)
def test_head_is_the_attractor_map_written_out(fields):
    model = perturb(tiny(**fields)).double().eval()
    g = torch.Generator().manual_seed(2)
    y, y0 = torch.randn(2, 2, 9, 32, generator=g, dtype=torch.float64)
    with torch.no_grad():
        got = model.head(y, y0)
    # the float32 RMSNorm of the package limits agreement to about 1e-7 of |f|
    torch.testing.assert_close(got, f_ref(model, y, y0), rtol=1e-5, atol=1e-5)


def test_depth_zero_decodes_the_proposal():
    model = perturb(tiny(tied_head=False)).double().eval()
    x = ids()
    with torch.no_grad():
        out = model(x, depth=0)
        expected = decode_ref(model, proposal_ref(model, x))
    assert out.solver is None and out.depth == 0
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)


def test_depth_k_runs_exactly_k_picard_iterations_of_the_map():
    picard = at.SolverConfig("picard", tol=1e-6, max_iter=100)
    model = perturb(tiny(fixed_point=dict(eval_solver=picard))).double().eval()
    x = ids()
    with torch.no_grad():
        out = model(x, depth=3)
        y0 = proposal_ref(model, x)
        y = y0
        for _ in range(3):
            y = f_ref(model, y, y0)
    assert out.solver.iters == 3 and out.depth == 3
    torch.testing.assert_close(out.logits, decode_ref(model, y), rtol=1e-5, atol=1e-5)


# -----------------------------------------------------------------------------
# The fixed point


@pytest.mark.parametrize(
    "freeze, unit",
    [(False, "position"), (True, "position"), (True, "sequence")],
    ids=["batch-stop", "per-position-stop", "per-sequence-stop"],
)
def test_equilibrium_is_the_fixed_point_of_a_plain_picard_loop(freeze, unit):
    solver = at.SolverConfig("anderson", tol=1e-7, max_iter=200, freeze_converged=freeze)
    model = perturb(tiny(fixed_point=dict(eval_solver=solver), solve_unit=unit)).double().eval()
    x = ids()
    with torch.no_grad():
        y0 = proposal_ref(model, x)
        y_ref, _ = picard_ref(model, y0)
        out = model(x)
        y_star, stats = model.equilibrium(model.proposal(x))
    assert out.depth == stats.iters < solver.max_iter
    # y* agrees with the float64 Picard limit up to the package's float32 RMSNorm
    err = (y_star - y_ref).flatten(1).norm(dim=1) / y_ref.flatten(1).norm(dim=1)
    assert float(err.max()) < 1e-6, err
    assert (y_ref - y0).norm() > 0.05 * y0.norm()  # the head moves y* well away from y0
    torch.testing.assert_close(out.logits, decode_ref(model, y_ref), rtol=1e-5, atol=1e-5)


def test_monitor_reports_solver_gates_shift_and_spectral_radius():
    model = tiny(gate_init=0.5, gate_max=1.0).double().eval()
    x = ids(b=1, t=4)
    report = model.monitor(x, spectral=True)
    with torch.no_grad():
        y0 = proposal_ref(model, x)
        y_ref, _ = picard_ref(model, y0)
    # the Jacobian of the written-out map at y*, one sequence of 4 x 32 values
    J = torch.autograd.functional.jacobian(lambda y: f_ref(model, y, y0), y_ref)
    J = J.reshape(y_ref.numel(), y_ref.numel())
    rho = float(torch.linalg.eigvals(J).abs().max())
    sigma = float(torch.linalg.matrix_norm(J, ord=2))
    assert report["iters"] >= 1 and report["residual"] < 1e-6 and report["converged"] == 1.0
    assert report["shift"] == pytest.approx(float((y_ref - y0).norm() / y0.norm()), rel=1e-4)
    assert report["gates"] == [pytest.approx((0.5, 0.5), abs=1e-6)]
    # power iteration on J^T: |J^T w| for a unit w never exceeds |J|_2, and tends to rho
    assert 0 < rho < 1
    assert report["spectral_radius"] <= sigma * (1 + 1e-6)
    assert report["spectral_radius"] == pytest.approx(rho, rel=0.2)


# -----------------------------------------------------------------------------
# Causality and the cache


@pytest.mark.parametrize("injection", ["additive", "concat", "initial"])
def test_changing_a_future_token_changes_no_earlier_logit(injection):
    model = tiny(injection=injection).eval()
    x = ids(t=16)
    x2 = x.clone()
    x2[:, 10] = (x2[:, 10] + 1) % VOCAB
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


FREEZE = at.SolverConfig("anderson", tol=1e-5, max_iter=100, freeze_converged=True)


def test_per_position_solve_is_exactly_causal():
    model = tiny(fixed_point=dict(eval_solver=FREEZE)).eval().double()
    x = ids(t=16)
    x2 = x.clone()
    x2[:, 12] = (x2[:, 12] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(x).logits, model(x2).logits
    # every position stops on its own residual, which depends on no later token
    assert torch.allclose(a[:, :12], b[:, :12], rtol=0, atol=1e-12)


def test_per_sequence_solve_is_causal_only_up_to_the_tolerance():
    # one residual and one set of Anderson weights a sequence: a later token moves the
    # earlier positions' logits, by an amount that shrinks with the tolerance
    x = ids(t=16)
    x2 = x.clone()
    x2[:, 12] = (x2[:, 12] + 1) % VOCAB
    leaks = []
    for tol in (1e-3, 1e-5):
        solver = at.SolverConfig("anderson", tol=tol, max_iter=200, freeze_converged=True)
        model = perturb(tiny(fixed_point=dict(eval_solver=solver), solve_unit="sequence"))
        model = model.eval().double()
        with torch.no_grad():
            a, b = model(x), model(x2)
        assert a.solver.sample_iters.shape == (2,)  # one sample a sequence
        leaks.append(float((a.logits[:, :12] - b.logits[:, :12]).abs().max()))
        assert 0 < leaks[-1] < tol * float(a.logits.abs().max()), (tol, leaks[-1])
    assert leaks[1] < leaks[0] / 3, leaks


def test_batch_costs_the_sum_of_its_sequences_depths():
    model = tiny(fixed_point=dict(eval_solver=FREEZE), init_std=0.1).eval().double()
    x = torch.cat([ids(b=1, t=10, seed=s) for s in range(5)])  # depths 10 to 13 here
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
    assert out.depth == out.solver.iters == max(solo)


# -----------------------------------------------------------------------------
# Training


@pytest.mark.parametrize(
    "kw",
    [
        dict(fixed_point=dict(backward="jfb")),
        dict(fixed_point=dict(backward="neumann")),
        dict(fixed_point=dict(backward="neumann", neumann_clip=None)),
        dict(fixed_point=dict(backward="adjoint")),
        dict(fixed_point=dict(backward="phantom", backward_steps=2, damping=0.5)),
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


# -----------------------------------------------------------------------------
# Config errors: one line naming the key path, the value and what is allowed


@pytest.mark.parametrize(
    "fields, pattern",
    [
        (
            dict(injection="sum"),
            r"^injection: 'sum' is not one of 'additive', 'concat', 'initial'$",
        ),
        (dict(start="random"), r"^start: 'random' is not one of 'proposal', 'zero', 'noise'$"),
        (
            dict(fixed_point=dict(backward="onestep")),
            r"^fixed_point\.backward: 'onestep' is not one of 'jfb', 'neumann', 'adjoint', "
            r"'phantom'$",
        ),
        (
            dict(fixed_point=dict(eval_solver=dict(max_iter="many"))),
            r"^fixed_point\.eval_solver\.max_iter: expected an integer, got 'many'$",
        ),
    ],
)
def test_bad_config_value_is_one_clear_line(fields, pattern):
    with pytest.raises(ConfigError, match=pattern):
        AttractorConfig(**fields)


def test_unknown_field_is_one_line_listing_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        at.models.make_config("attractor", n_layers=3)
    msg = str(err.value)
    assert msg.startswith("attractor.n_layers: unknown key; valid keys under attractor: ")
    assert "\n" not in msg and all(k in msg for k in ("n_backbone", "fixed_point", "injection"))


def test_build_model_names_the_kind_in_the_key_path():
    with pytest.raises(ConfigError, match=r"^attractor\.fixed_point\.backward: 'exact' is not"):
        at.build_model(kind="attractor", fixed_point=dict(backward="exact"))


def test_a_float_written_as_yaml_reads_it_is_accepted():
    # YAML 1.1 reads 5e-1 as the string '5e-1': the typed loader takes it as the number
    model = tiny(gate_init="5e-1")
    assert model.config.gate_init == 0.5
    assert model.head.gates()[0][0].mean().item() == pytest.approx(0.5, abs=1e-6)
