"""FixedPointConfig, SolverConfig.at_depth and the backward statistics, against hand-run
Picard iterations, autograd through hand-written unrolls, Jacobians written out by hand
and counts of the vector-Jacobian products actually run."""

import math

import pytest
import torch
from maps import TanhMap

import attractor as at
from attractor.core.typed_config import ConfigError, from_data
from attractor.engine import FixedPointConfig, SolverConfig

# Picard: at a depth T the pre-image, where the backward takes J, is then f^(T-1)(y0)
PICARD = SolverConfig("picard", tol=1e-6, max_iter=50)


def picard(f, y: torch.Tensor, n: int) -> torch.Tensor:
    """f applied n times to y, without a graph."""
    with torch.no_grad():
        for _ in range(n):
            y = f(y)
    return y


def jt_v(f: TanhMap, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J^T v at y for f(y) = tanh(W y + U x + b), written out: J = diag(1 - f(y)^2) W."""
    with torch.no_grad():
        return ((1 - f(y).square()) * v) @ f.W


def with_offset(f: TanhMap):
    """g(y) = f(y) + c with c = 0 a leaf: dL/dc is exactly the u the backward hands to f."""
    c = torch.zeros_like(f.y0, requires_grad=True)
    return (lambda y, active=None: f(y) + c), c


class CountVJP(torch.autograd.Function):
    """The identity, whose backward counts its calls: wrapped around f's input, one call per
    vector-Jacobian product through f with respect to y."""

    calls = 0

    @staticmethod
    def forward(ctx, y):
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        CountVJP.calls += 1
        return grad


def counted(f):
    """f with its input passed through CountVJP; resets the count."""
    CountVJP.calls = 0
    return lambda y, active=None: f(CountVJP.apply(y))


# -----------------------------------------------------------------------------
# SolverConfig.at_depth


def test_at_depth_is_tol_0_and_exactly_depth_iterations_returning_the_last():
    base = SolverConfig("broyden", tol=1e-3, max_iter=8, min_iter=2, history=3, mixing=0.7,
                        check_every=2, freeze_converged=True)  # fmt: skip
    fixed = base.at_depth(20)
    assert fixed == SolverConfig("broyden", tol=0.0, max_iter=20, min_iter=20, history=3,
                                 mixing=0.7, check_every=2, return_last=True,
                                 freeze_converged=True)  # fmt: skip
    assert (base.tol, base.min_iter, base.max_iter, base.return_last) == (1e-3, 2, 8, False)
    zero = base.at_depth(0)
    assert zero.max_iter == zero.min_iter == 0 and zero.tol == 0.0 and zero.return_last


def test_at_depth_negative_is_an_error():
    with pytest.raises(ValueError, match=r"^solver: depth must be >= 0, got -1$"):
        SolverConfig().at_depth(-1)


def test_at_depth_returns_the_last_iterate_not_the_best():
    # non-normal A: the Picard residuals first grow, so the best iterate is an early one
    a = torch.tensor([[0.5, 4.0], [0.0, 0.5]], dtype=torch.float64)
    c = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    f = lambda y: y @ a.T + c  # noqa: E731
    y0 = torch.tensor([[18.0, 2.1]], dtype=torch.float64)
    best, _ = at.solve(f, y0, SolverConfig("picard", tol=0.0, max_iter=4))
    y, stats = at.solve(f, y0, SolverConfig("picard").at_depth(4))
    assert stats.iters == 4 and torch.equal(y, picard(f, y0, 4))
    assert not torch.allclose(best, y)  # the lowest-residual rule would return another one


# -----------------------------------------------------------------------------
# FixedPointConfig.solver and .solve at a depth


def test_solver_picks_the_training_or_the_evaluation_solver():
    train = SolverConfig("picard", tol=1e-3, max_iter=7)
    evaluate = SolverConfig("broyden", tol=1e-5, max_iter=40, history=3)
    fp = FixedPointConfig(train_solver=train, eval_solver=evaluate)
    assert fp.solver(True) is train and fp.solver(False) is evaluate
    assert fp.solver(True, 5) == SolverConfig("picard", tol=0.0, max_iter=5, min_iter=5,
                                              return_last=True)  # fmt: skip
    assert fp.solver(False, 9) == SolverConfig("broyden", tol=0.0, max_iter=9, min_iter=9,
                                               history=3, return_last=True)  # fmt: skip


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("depth", [1, 3, 12])
@pytest.mark.parametrize("grad", [True, False])
def test_solve_at_depth_is_f_applied_depth_times(training, depth, grad):
    f = TanhMap(d=8, batch=3, norm=0.5, seed=1)
    y0 = f.y0.detach()
    # train and eval solvers differ, and each runs to its max_iter of 6 on its own
    fp = FixedPointConfig(train_solver=SolverConfig("picard", tol=1e-6, max_iter=6),
                          eval_solver=SolverConfig("picard", tol=1e-8, max_iter=6))  # fmt: skip
    with torch.no_grad():
        _, free = fp.solve(f, y0, training)
    assert free.iters == 6
    with torch.set_grad_enabled(grad):
        y, stats = fp.solve(f, y0, training, depth)
    assert stats.iters == depth and len(stats.trace) == depth
    assert y.requires_grad == grad
    assert torch.equal(y.detach(), picard(f, y0, depth))


@pytest.mark.parametrize("method", ["anderson", "broyden"])
@pytest.mark.parametrize("depth", [1, 3, 15])
def test_depth_overrides_the_stopping_rule(method, depth):
    f = TanhMap(d=8, batch=3, norm=0.3, seed=2)
    loose = SolverConfig(method, tol=0.5, max_iter=4, check_every=2)
    fp = FixedPointConfig(train_solver=loose, eval_solver=loose)
    with torch.no_grad():
        _, free = fp.solve(f, f.y0, True)
        _, stats = fp.solve(f, f.y0, True, depth)
    assert free.iters == 2  # the loose tolerance stops at the first check
    assert stats.iters == depth


@pytest.mark.parametrize("backward", ["jfb", "neumann", "adjoint", "phantom"])
def test_depth_0_returns_the_start_with_and_without_gradients(backward):
    f = TanhMap(d=8, batch=3, seed=3)
    fp = FixedPointConfig(backward=backward)
    with torch.no_grad():
        plain, _ = fp.solve(f, f.y0, True, 0)
    y, stats = fp.solve(f, f.y0, True, 0)
    assert stats.iters == 0 and torch.equal(plain, f.y0) and torch.equal(y, f.y0)
    w = torch.randn(3, 8, dtype=torch.float64)
    (grad,) = torch.autograd.grad((w * y).sum(), f.y0)
    assert torch.equal(grad, w)  # y = y0: the identity's gradient


# -----------------------------------------------------------------------------
# .solve passes the backward settings through


@pytest.mark.parametrize(("k", "a"), [(1, 1.0), (3, 1.0), (3, 0.5)])
def test_solve_phantom_is_autograd_through_k_unrolled_steps(k, a):
    f = TanhMap(d=8, batch=3, norm=0.8, seed=4)
    weight = torch.randn(3, 8, dtype=torch.float64)
    depth = 4
    fp = FixedPointConfig(train_solver=PICARD, backward="phantom", backward_steps=k, damping=a)
    y, _ = fp.solve(f, f.y0, True, depth)
    ours = torch.autograd.grad((weight * y).sum(), f.params)
    # by hand: the solver's pre-image f^(depth-1)(y0) without a graph, then k damped steps
    ref_y = picard(f, f.y0.detach(), depth - 1)
    for _ in range(k):
        ref_y = (1 - a) * ref_y + a * f(ref_y)
    ref = torch.autograd.grad((weight * ref_y).sum(), f.params[:4])
    torch.testing.assert_close(y, ref_y, rtol=1e-13, atol=1e-15)
    for name, g, r in zip("WUbx", ours[:4], ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-11, atol=1e-14, msg=name)
    assert ours[4].abs().max() == 0  # y0 enters only as the start
    if (k, a) != (1, 1.0):  # the settings matter: k = 1, a = 1 is a different gradient
        jfb_y, _ = FixedPointConfig(train_solver=fp.train_solver).solve(f, f.y0, True, depth)
        (jfb_w,) = torch.autograd.grad((weight * jfb_y).sum(), f.W)
        assert (jfb_w - ours[0]).norm() > 1e-3 * ours[0].norm()


def test_unclipped_neumann_is_v_plus_jt_v():
    f = TanhMap(d=8, batch=3, norm=0.9, seed=5)
    g, c = with_offset(f)
    fp = FixedPointConfig(train_solver=PICARD, backward="neumann", neumann_clip=None)
    v = torch.randn(3, 8, dtype=torch.float64)
    y, _ = fp.solve(g, f.y0, True, 3)
    (u,) = torch.autograd.grad((v * y).sum(), c)
    y_pre = picard(f, f.y0.detach(), 2)  # J is taken at the solver's pre-image
    torch.testing.assert_close(u, v + jt_v(f, y_pre, v), rtol=1e-12, atol=1e-14)
    jac = torch.autograd.functional.jacobian(f, y_pre)  # (3, 8, 3, 8), from autograd
    for i in range(3):  # and against each sample's full Jacobian block
        torch.testing.assert_close(u[i], v[i] + jac[i, :, i].T @ v[i], rtol=1e-12, atol=1e-14)


def test_clipped_neumann_rescales_jt_v_where_it_exceeds_c_v():
    f = TanhMap(d=8, batch=4, norm=0.9, seed=6)
    g, c = with_offset(f)
    v = torch.randn(4, 8, dtype=torch.float64)
    y_pre = picard(f, f.y0.detach(), 2)
    jtv = jt_v(f, y_pre, v)
    ratio = jtv.norm(dim=1) / v.norm(dim=1)  # |J^T v| / |v| per sample
    clip = float(ratio.sort().values[1:3].mean())  # two samples above it, two below
    above = ratio > clip
    assert above.sum() == 2
    grads = {}
    for name, value in (("clipped", clip), ("unclipped", None)):
        fp = FixedPointConfig(train_solver=PICARD, backward="neumann", neumann_clip=value)
        y, _ = fp.solve(g, f.y0, True, 3)
        (grads[name],) = torch.autograd.grad((v * y).sum(), c)
    scale = torch.where(above, clip / ratio, 1.0)[:, None]
    torch.testing.assert_close(grads["clipped"], v + scale * jtv, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads["unclipped"], v + jtv, rtol=1e-12, atol=1e-14)
    change = (grads["clipped"] - grads["unclipped"]).norm(dim=1)
    assert (change[above] > 1e-3).all() and (change[~above] == 0).all()
    second = (grads["clipped"] - v).norm(dim=1)  # the clipped term: |J^T v| <= c |v|
    assert (second <= clip * v.norm(dim=1) * (1 + 1e-12)).all()


# -----------------------------------------------------------------------------
# stats.backward_iters


@pytest.mark.parametrize("backward", ["neumann", "adjoint"])
def test_backward_iters_is_none_until_backward_runs(backward):
    f = TanhMap(d=8, batch=3, seed=7)
    y, stats = FixedPointConfig(backward=backward).solve(f, f.y0, True)
    assert stats.backward_iters is None
    y.sum().backward()
    assert stats.backward_iters is not None


def test_backward_iters_is_one_after_a_neumann_backward():
    f = TanhMap(d=8, batch=3, seed=8)
    g = counted(f)
    y, stats = FixedPointConfig(backward="neumann").solve(g, f.y0, True)
    assert CountVJP.calls == 0  # the solve and the recorded application run none
    y.sum().backward()
    assert stats.backward_iters == 1 == CountVJP.calls


@pytest.mark.parametrize("method", ["anderson", "picard"])
def test_backward_iters_counts_the_adjoint_solvers_iterations(method):
    f = TanhMap(d=8, batch=3, norm=0.9, seed=9)
    g = counted(f)
    adjoint = SolverConfig(method, tol=1e-10, max_iter=400)
    fp = FixedPointConfig(train_solver=PICARD, backward="adjoint", adjoint_solver=adjoint)
    v = torch.randn(3, 8, dtype=torch.float64)
    y, stats = fp.solve(g, f.y0, True, 6)
    (v * y).sum().backward()
    assert stats.backward_iters == CountVJP.calls > 5  # one VJP per adjoint iteration
    # the same adjoint system u = J^T u + v, solved here with J^T written out
    y_pre = picard(f, f.y0.detach(), 5)
    _, separate = at.solve(lambda u: jt_v(f, y_pre, u) + v, v, adjoint)
    assert stats.backward_iters == separate.iters


def test_backward_iters_follows_the_adjoint_solver_setting():
    f = TanhMap(d=8, batch=3, seed=10)
    fp = FixedPointConfig(backward="adjoint",
                          adjoint_solver=SolverConfig("picard", tol=0.0, max_iter=3))  # fmt: skip
    y, stats = fp.solve(counted(f), f.y0, True)
    y.sum().backward()
    assert stats.backward_iters == 3 == CountVJP.calls


@pytest.mark.parametrize("backward", ["jfb", "phantom"])
def test_backward_iters_stays_none_without_hook_products(backward):
    f = TanhMap(d=8, batch=3, seed=11)
    y, stats = FixedPointConfig(backward=backward).solve(f, f.y0, True)
    y.sum().backward()
    assert stats.backward_iters is None and f.W.grad.abs().sum() > 0


def test_adjoint_solver_may_freeze_converged_samples():
    f = TanhMap(d=8, batch=3, norm=0.9, seed=12)
    w = torch.randn(3, 8, dtype=torch.float64)
    grads = []
    for freeze in (False, True):
        adjoint = SolverConfig("anderson", tol=1e-12, max_iter=200, freeze_converged=freeze)
        fp = FixedPointConfig(backward="adjoint", adjoint_solver=adjoint)
        y, _ = fp.solve(f, f.y0, True, 6)
        grads.append(torch.autograd.grad((w * y).sum(), f.W)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-12)


# -----------------------------------------------------------------------------
# Bad settings


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(backward="onestep"),
         "backward: 'onestep' is not one of 'jfb', 'neumann', 'adjoint', 'phantom'"),
        (dict(backward_steps=0), "backward_steps: must be >= 1 (phantom's k steps), got 0"),
        (dict(damping=0.0), "damping: must lie in (0, 1] (phantom's step size a), got 0.0"),
        (dict(damping=1.5), "damping: must lie in (0, 1] (phantom's step size a), got 1.5"),
        (dict(damping=math.nan), "damping: must lie in (0, 1] (phantom's step size a), got nan"),
        (dict(neumann_clip=-1.0), "neumann_clip: must be >= 0, or None for no clip, got -1.0"),
        (dict(damping="high"), "damping: expected a number, got 'high'"),
        (dict(neumann_clip=True), "neumann_clip: expected a number, got True"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_line_value_errors(fields, message):
    with pytest.raises(ValueError) as err:
        FixedPointConfig(**fields)
    assert str(err.value) == message
    # through the typed loader (YAML, --set, config.json): the same line under its key path
    with pytest.raises(ConfigError) as err:
        from_data(FixedPointConfig, fields, "model.fixed_point")
    text = str(err.value)
    assert "\n" not in text and text.startswith("model.fixed_point")
    assert text.endswith(message.split(": ", 1)[1])


def test_fixed_point_rejects_the_same_settings():
    f = TanhMap(d=4, batch=2)
    for kw in (dict(damping=0.0), dict(neumann_clip=-0.5), dict(backward_steps=0)):
        with pytest.raises(ValueError, match=f"^{next(iter(kw))}: must"):
            at.fixed_point(f, f.y0, backward="phantom", **kw)
