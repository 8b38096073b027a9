"""attractor-cpu solved under CPU bf16 autocast (random init, evaluation mode, 2 x 64
tokens): the solver stops at bf16's noise floor as soon as float32 would reach the same
residual, and the answer is as close to float32's as bf16 arithmetic allows.

The bound (u = 2^-8, bf16's unit roundoff: 8 significant bits). f is the float32 head map
(float32 proposal y0), f~ the bf16 one (bf16 proposal, bf16 matmuls), L the Lipschitz
constant of f near its fixed point Y* (estimated by power iteration on J^T J). For the bf16
answer Yb and the float32 answer Y32,

    |Yb - Y32| <= (|Yb - f~(Yb)| + |f~(Yb) - f(Yb)| + |Y32 - f(Y32)|) / (1 - L),

since |Y - Y*| <= |Y - f(Y)| / (1 - L) for any Y (Banach), and |Y - f(Y)| <= |Y - f~(Y)| +
|f~(Y) - f(Y)|. The first term is the bf16 solve's own residual, the second the bf16 map's
error (the rounding of its matmuls and of the backbone's y0), measured at Yb. The solve is
as good as bf16 allows when its residual is below that error measured at the float32
answer, |f~(Y32) - Y32|: more iterations could not shrink the bound by more than half.
The logits l = E RMSNorm(Y) then differ by the decode's rounding, at most
3u (|h| |E|^T) per logit to first order (h and E rounded to bf16 and the output rounded,
each by at most u; the sum accumulates in float32), plus |E|_2 |RMSNorm(Yb) -
RMSNorm(Y32)|, and RMSNorm is 2 sqrt(C) max|w| / |y| Lipschitz at y. That worst-case
bound is loose (about 20x here: the rounding errors of a dot product cancel), so per
position the logits are also held to the error bf16 makes with no solve at all, the
proposal's logits (depth 0) against float32's, plus one u: measured 2.7u against 2.8u + u.
"""

import dataclasses
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from attractor.models import build_model

U = 2.0**-8
TOL = 3e-4  # the paper's training tolerance: below bf16's floor


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model("attractor-cpu").eval()
    solver = model.config.fixed_point.eval_solver
    model.config.fixed_point.eval_solver = dataclasses.replace(solver, tol=TOL)
    return model


@pytest.fixture(scope="module")
def ids(model):
    return torch.randint(0, 4096, (2, 64), generator=torch.Generator().manual_seed(0))


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def with_solver(model, **fields):
    """The model's evaluation solver with `fields` changed (returns the old one)."""
    old = model.config.fixed_point.eval_solver
    model.config.fixed_point.eval_solver = dataclasses.replace(old, **fields)
    return old


@torch.no_grad()
def test_bf16_stops_within_1_5x_the_iterations_float32_needs_for_that_residual(model, ids):
    with bf16():
        stats = model(ids).solver
    assert (stats.stalled | stats.converged).all() and stats.stalled.any()
    level = float(stats.residual.max())  # the residual bf16 reached: its effective residual
    old = with_solver(model, tol=level * (1 + 1e-6))
    try:
        f32 = model(ids).solver
    finally:
        model.config.fixed_point.eval_solver = old
    assert f32.converged.all() and not f32.stalled.any()
    assert stats.iters <= 1.5 * f32.iters, (stats.iters, f32.iters, level)
    # before: without stall detection bf16 spends the whole T_max at that floor
    old = with_solver(model, stall_patience=0)
    try:
        with bf16():
            before = model(ids).solver
    finally:
        model.config.fixed_point.eval_solver = old
    assert before.iters == old.max_iter and not before.converged.all()


def lipschitz(f, y: torch.Tensor, iters: int = 12) -> float:
    """|J|_2 of f at y by power iteration on J^T J (J v by double backward, so attention
    runs on its composite math kernel)."""
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    sigma = 0.0
    with sdpa_kernel(SDPBackend.MATH):
        for _ in range(iters):
            w = w / w.norm()
            _, jw = torch.autograd.functional.jvp(f, y, w)
            _, w = torch.autograd.functional.vjp(f, y, jw)
            sigma = float(w.norm()) ** 0.5
    return sigma


def test_bf16_answer_and_logits_within_the_rounding_bound(model, ids):
    with torch.no_grad():
        y0 = model.proposal(ids)
        y32, _ = model.equilibrium(y0)
        with bf16():
            y0b = model.proposal(ids)
            yb, _ = model.equilibrium(y0b)
            fb_yb = model.head(yb, y0b).float()
            fb_y32 = model.head(y32, y0b).float()
            logits_b = model.decode(yb).float()
        f_yb, f_y32 = model.head(yb, y0), model.head(y32, y0)
    lip = lipschitz(lambda v: model.head(v, y0), y32)
    assert lip < 1.0  # a contraction (0.92 for this init): the bound below needs 1 - L > 0

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    r_b, err_b, r_32 = rel(fb_yb, yb), rel(fb_yb, f_yb), rel(f_y32, y32)
    # the solve's residual is below bf16's own error at the float32 answer
    assert r_b <= rel(fb_y32, y32)
    bound_y = (r_b + err_b) * float(yb.norm()) / (1 - lip) + r_32 * float(y32.norm()) / (1 - lip)
    dy = float((yb - y32).norm())
    assert dy <= bound_y, (dy, bound_y)
    # the decode: per logit, the bf16 rounding of h, E and the output
    with torch.no_grad():
        h_b, h_32 = model.norm(yb), model.norm(y32)
        emb = model.embed.weight
        rounding = (logits_b - h_b @ emb.T).abs()
        per_logit = 3 * U * (h_b.abs() @ emb.abs().T)
        assert (rounding <= per_logit + 1e-6).all()
        c = y32.shape[-1]
        norm_lip = 2 * math.sqrt(c) * float(model.norm.weight.abs().max())
        norm_lip /= float(y32.norm(dim=-1).min())
        spread = float(torch.linalg.matrix_norm(emb, 2)) * norm_lip * bound_y
        assert float(((h_b - h_32) @ emb.T).norm()) <= spread
        logit_err = float((logits_b - h_32 @ emb.T).norm())
        assert logit_err <= float(per_logit.norm()) + spread
        # per position: the solve adds at most u to the error bf16 makes with no solve at
        # all (the proposal's logits, depth 0, against float32's)
        with bf16():
            proposal_b = model(ids, depth=0).logits.float()
        proposal_32 = model(ids, depth=0).logits
        assert per_position(logits_b, h_32 @ emb.T) <= per_position(proposal_b, proposal_32) + U


def per_position(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest per-position relative error |a_t - b_t| / |b_t|."""
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())
