"""Solvers against independent references: residuals recomputed here, a naive Anderson,
a hand-run Picard sequence, and the f-evaluation counts of plain iteration."""

import math

import pytest
import torch
from maps import TanhMap, symmetric_matrix

import attractor as at

METHODS = ["anderson", "picard", "broyden"]


def true_residual(f, y):
    """max over the batch of |f(y) - y| / |y|, computed independently of the solver."""
    b = y.shape[0]
    return float(((f(y) - y).reshape(b, -1).norm(dim=1) / y.reshape(b, -1).norm(dim=1)).max())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reaches_tol_on_random_contractions(method, seed):
    f = TanhMap(d=32, batch=4, norm=0.9, seed=seed)
    with torch.no_grad():
        cfg = at.SolverConfig(method=method, tol=1e-6, max_iter=400)
        y, stats = at.solve(f, f.y0.detach(), cfg)
        # the returned point is f(y_k), one step past the measured iterate: still below tol
        assert stats.converged.all() and not stats.diverged.any()
        assert true_residual(f, y) < 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_reaches_tol_on_linear_map_with_spread_spectrum(method):
    a = symmetric_matrix(48, 0.9, seed=3)
    c = torch.randn(5, 48, dtype=torch.float64)
    y, stats = at.solve(lambda y: y @ a.T + c, c, at.SolverConfig(method, tol=1e-6, max_iter=500))
    exact = torch.linalg.solve(torch.eye(48, dtype=torch.float64) - a, c.T).T
    assert stats.converged.all()
    assert (y - exact).norm() / exact.norm() < 1e-5


def test_anderson_needs_at_most_half_the_evaluations_of_picard():
    a = symmetric_matrix(64, 0.9, seed=0)
    c = 0.1 * torch.randn(4, 64, dtype=torch.float64)
    f = lambda y: torch.tanh(y @ a.T + c)  # noqa: E731
    evals = {}
    for method in ("anderson", "picard"):
        calls = [0]

        def counted(y, calls=calls):
            calls[0] += 1
            return f(y)

        _, stats = at.solve(counted, c, at.SolverConfig(method, tol=1e-6, max_iter=1000))
        assert stats.converged.all()
        evals[method] = calls[0]
    assert evals["picard"] > 60  # the map really contracts slowly
    assert evals["anderson"] <= evals["picard"] / 2, evals


def anderson_on_lists(f, x0, m, steps, weights):
    """Anderson on a list of the last m pairs (x_i, f(x_i)): a plain step while the list has
    one pair, then x_{k+1} = weights(xs, fs), the images f(x_i) returned one per step."""
    xs, fs, out = [], [], []
    x = x0
    for _ in range(steps):
        fx = f(x)
        out.append(fx)
        xs, fs = (xs + [x])[-m:], (fs + [fx])[-m:]
        x = fx if len(xs) == 1 else weights(xs, fs)
    return out


def naive_anderson(f, x0, m, steps):
    """Textbook type-II Anderson: x_{k+1} = sum a_i f(x_i), a = argmin |sum a_i g_i| with
    sum a_i = 1, solved in the difference form by lstsq."""

    def difference_form(xs, fs):
        g = [fi - xi for fi, xi in zip(fs, xs, strict=True)]
        dg = torch.stack([g[i + 1] - g[i] for i in range(len(g) - 1)], dim=1)  # (d, n-1)
        gamma = torch.linalg.lstsq(dg, g[-1].unsqueeze(1)).solution.squeeze(1)
        df = torch.stack([fs[i + 1] - fs[i] for i in range(len(fs) - 1)], dim=1)
        return fs[-1] - df @ gamma

    return anderson_on_lists(f, x0, m, steps, difference_form)


def test_anderson_ring_buffer_matches_textbook_anderson():
    f = TanhMap(d=12, batch=1, norm=0.95, seed=4)
    y0 = f.y0.detach()
    with torch.no_grad():
        ref = naive_anderson(lambda x: f(x.unsqueeze(0)).squeeze(0), y0[0], m=3, steps=12)
        for k in range(1, 13):
            cfg = at.SolverConfig(
                "anderson", tol=0.0, max_iter=k, history=3, return_last=True, regularization=0.0
            )
            y, _ = at.solve(f, y0, cfg)
            assert torch.allclose(y[0], ref[k - 1], rtol=1e-9, atol=1e-11), k


def bordered_anderson(f, x0, m, steps, lam):
    """Anderson as DEQ's reference code writes it: the weights from the bordered system
    [[0, 1^T], [1, G G^T + lam I]] [nu, a] = [1, 0] (lam added as it is), x = sum a_i f(x_i)."""

    def bordered(xs, fs):
        g = torch.stack([fi - xi for fi, xi in zip(fs, xs, strict=True)])  # (n, d)
        n = g.shape[0]
        kkt = torch.zeros(n + 1, n + 1, dtype=g.dtype)
        kkt[0, 1:] = kkt[1:, 0] = 1.0
        kkt[1:, 1:] = g @ g.T + lam * torch.eye(n, dtype=g.dtype)
        rhs = torch.zeros(n + 1, dtype=g.dtype)
        rhs[0] = 1.0
        return torch.linalg.solve(kkt, rhs)[1:] @ torch.stack(fs)

    return anderson_on_lists(f, x0, m, steps, bordered)


def test_absolute_regularization_matches_the_bordered_anderson():
    f = TanhMap(d=12, batch=1, norm=0.95, seed=4)
    y0 = f.y0.detach()
    lam = 1e-2  # large enough to move the weights away from the unregularised ones
    with torch.no_grad():
        ref = bordered_anderson(lambda x: f(x.unsqueeze(0)).squeeze(0), y0[0], 3, 8, lam)
        for k in range(1, 9):
            cfg = at.SolverConfig("anderson", tol=0.0, max_iter=k, history=3, return_last=True,
                                  regularization=lam, absolute_regularization=True)  # fmt: skip
            y, _ = at.solve(f, y0, cfg)
            assert torch.allclose(y[0], ref[k - 1], rtol=1e-9, atol=1e-11), k
        relative = at.SolverConfig("anderson", tol=0.0, max_iter=8, history=3, return_last=True,
                                   regularization=lam)  # fmt: skip
        y_rel, _ = at.solve(f, y0, relative)
    assert not torch.allclose(y_rel[0], ref[-1], rtol=1e-6, atol=1e-8)


def test_returns_lowest_residual_iterate_and_last_on_request():
    # non-normal A: Picard residuals g_k = A^k g_0 first grow, then decay
    a = torch.tensor([[0.5, 4.0], [0.0, 0.5]], dtype=torch.float64)
    c = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    f = lambda y: y @ a.T + c  # noqa: E731
    y0 = torch.tensor([[18.0, 2.1]], dtype=torch.float64)  # the fixed point is (18, 2)
    xs = [y0]
    for _ in range(4):
        xs.append(f(xs[-1]))
    r = [float((f(x) - x).norm() / x.norm()) for x in xs[:4]]
    k_best = min(range(4), key=r.__getitem__)
    assert k_best != 3  # the hand-run sequence really has its best iterate early
    cfg = at.SolverConfig("picard", tol=0.0, max_iter=4)
    y, stats = at.solve(f, y0, cfg)
    assert torch.allclose(y, xs[k_best + 1])
    assert math.isclose(float(stats.residual[0]), r[k_best], rel_tol=1e-9)
    assert [round(t, 9) for t in stats.trace] == [round(t, 9) for t in r]
    y_last, _ = at.solve(f, y0, at.SolverConfig("picard", tol=0.0, max_iter=4, return_last=True))
    assert torch.allclose(y_last, xs[4])


def test_residual_relative_to_the_image_and_the_batch_maximum_stop():
    """relative_to="image": r = |f(y) - y| / |f(y)|, recomputed here from a hand-run Picard
    sequence; the solve stops at the first iteration (after min_iter) where the batch
    maximum of r is below tol, which the denominator |y| reaches at another iteration."""
    f = TanhMap(d=8, batch=3, norm=0.7, seed=9)
    y0 = 3.0 * f.y0.detach()  # |y| far from |f(y)| early on: the two denominators differ
    xs = [y0]
    with torch.no_grad():
        for _ in range(30):
            xs.append(f(xs[-1]))

    def rel(x, ref):
        b = x.shape[0]
        return ((f(x) - x).reshape(b, -1).norm(dim=1) / ref.reshape(b, -1).norm(dim=1)).max()

    with torch.no_grad():
        by_image = [float(rel(x, f(x))) for x in xs[:30]]
        by_iterate = [float(rel(x, x)) for x in xs[:30]]
        assert by_image[1] < by_iterate[1]
        tol = 0.5 * (by_image[1] + by_iterate[1])  # the 2nd iteration passes one rule only
        stops = {}
        for ref, rs in (("image", by_image), ("iterate", by_iterate)):
            cfg = at.SolverConfig("picard", tol=tol, max_iter=30, relative_to=ref,
                                  return_last=True, stall_patience=0)  # fmt: skip
            y, stats = at.solve(f, y0, cfg)
            stops[ref] = stats.iters
            expected = next(k for k, r in enumerate(rs) if r < tol) + 1
            assert stats.iters == expected, ref
            assert [round(t, 9) for t in stats.trace] == [round(t, 9) for t in rs[:expected]]
            torch.testing.assert_close(y, xs[expected], rtol=0, atol=0)
    assert stops == {"image": 2, "iterate": 3}


def test_picard_damping_and_exact_step_count():
    f = TanhMap(d=8, batch=2, seed=5)
    y0 = f.y0.detach()
    with torch.no_grad():
        y, stats = at.solve(
            f, y0, at.SolverConfig("picard", tol=0.0, max_iter=3, mixing=0.5, return_last=True)
        )
        x = y0
        for _ in range(2):
            x = 0.5 * x + 0.5 * f(x)
        assert stats.iters == 3
        assert torch.allclose(y, f(x))


def test_min_iter_and_check_every():
    f = TanhMap(d=8, batch=2, seed=6)
    y0 = f.y0.detach()
    with torch.no_grad():
        _, stats = at.solve(f, y0, at.SolverConfig(tol=10.0, max_iter=20, min_iter=7))
        assert stats.iters == 7
        _, every1 = at.solve(f, y0, at.SolverConfig(tol=1e-8, max_iter=100))
        _, every4 = at.solve(f, y0, at.SolverConfig(tol=1e-8, max_iter=100, check_every=4))
    assert every4.iters % 4 == 0 and every1.iters <= every4.iters < every1.iters + 4
    assert every4.converged.all()


def test_batch_samples_are_independent():
    f = TanhMap(d=8, batch=3, seed=7)
    y0 = f.y0.detach()
    cfg = at.SolverConfig(tol=0.0, max_iter=15, return_last=True)
    with torch.no_grad():
        y_all, _ = at.solve(f, y0, cfg)
        for i in range(3):
            x_i = f.x.detach()[i : i + 1]
            y_i, _ = at.solve(
                lambda y, x_i=x_i: torch.tanh(y @ f.W.T + x_i @ f.U.T + f.b), y0[i : i + 1], cfg
            )
            assert torch.allclose(y_all[i], y_i[0], atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_any_float_dtype_and_trailing_shape(method, dtype):
    torch.manual_seed(0)
    w = symmetric_matrix(16, 0.6).to(dtype)
    c = torch.randn(2, 3, 5, 16).to(dtype)
    f = lambda y: torch.tanh(y @ w.T + c)  # noqa: E731
    y, stats = at.solve(f, c, at.SolverConfig(method, tol=1e-9, max_iter=40))
    assert y.dtype == dtype and y.shape == c.shape
    floor = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}[dtype]
    assert float(stats.residual.max()) < floor
    w64, c64 = w.double(), c.double()
    assert true_residual(lambda v: torch.tanh(v @ w64.T + c64), y.double()) < 4 * floor


def test_divergence_is_reported_not_raised():
    c = torch.ones(2, 4, dtype=torch.float64)
    y, stats = at.solve(
        lambda y: 3.0 * y + c, c, at.SolverConfig("picard", max_iter=50, diverge_above=1.5)
    )
    assert stats.diverged.all() and not stats.converged.any()
    assert stats.iters < 50 and torch.isfinite(y).all()
    # a non-finite image stops the solve too, and the best finite iterate comes back
    calls = [0]

    def nan_after_three(y):
        calls[0] += 1
        return 0.5 * y + c if calls[0] <= 3 else y * math.nan

    y, stats = at.solve(nan_after_three, c, at.SolverConfig("anderson", tol=0.0, max_iter=50))
    assert stats.diverged.all() and stats.iters == 4 and torch.isfinite(y).all()


def test_zero_start_is_not_divergence():
    f = TanhMap(d=8, batch=2, seed=8)
    with torch.no_grad():
        y, stats = at.solve(f, torch.zeros(2, 8, dtype=torch.float64), at.SolverConfig(tol=1e-8))
    assert stats.converged.all() and not stats.diverged.any()


def test_bad_input_gets_clear_errors():
    with pytest.raises(
        ValueError, match="^method: 'newton' is not one of 'anderson', 'picard', 'broyden'$"
    ):
        at.SolverConfig(method="newton")
    with pytest.raises(ValueError, match="min_iter"):
        at.SolverConfig(min_iter=5, max_iter=2)
    y0 = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="same shape"):
        at.solve(lambda y: y[:, :2], y0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        at.solve(lambda y: y, torch.full((2, 4), math.inf))
    with pytest.raises(ValueError, match="floating-point"):
        at.solve(lambda y: y, torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_runs_on_device(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    w = symmetric_matrix(16, 0.8).float().to(device)
    c = torch.randn(4, 16, device=device)
    y, stats = at.solve(lambda y: torch.tanh(y @ w.T + c), c, at.SolverConfig(tol=1e-5))
    assert y.device.type == device and stats.converged.all()


def test_freeze_converged_makes_each_sample_independent_of_the_others():
    # sample 0 contracts fast, sample 1 slowly; frozen, sample 0 ends exactly as if alone
    rates = torch.tensor([0.2, 0.9], dtype=torch.float64)
    masks = []

    def f(y, active=None):  # called without the mask while every sample is active
        masks.append(None if active is None else active.clone())
        return rates[: y.shape[0], None] * torch.tanh(y) + 1.0

    cfg = at.SolverConfig("anderson", tol=1e-9, max_iter=200, freeze_converged=True)
    start = torch.zeros(2, 6, dtype=torch.float64)
    y, stats = at.solve(f, start, cfg)
    active_evals = [1 if m is None else int(m[0]) for m in masks]
    assert masks[0] is None and masks[-1] is not None  # told once sample 0 had frozen
    y_alone, alone = at.solve(f, start[:1], cfg)
    assert torch.equal(y[0], y_alone[0])
    assert int(stats.sample_iters[0]) == alone.iters == sum(active_evals)  # f was told
    assert int(stats.sample_iters[1]) == stats.iters > alone.iters
    y_free, _ = at.solve(f, start, at.SolverConfig("anderson", tol=1e-9, max_iter=200))
    assert not torch.equal(y_free[0], y_alone[0])  # without freezing it keeps iterating


def test_return_last_with_frozen_samples_stops_once_every_sample_is_done():
    # sample 0 converges long before sample 1; frozen, it must not keep the solve running
    rates = torch.tensor([0.2, 0.9], dtype=torch.float64)

    def f(y, active=None):
        return rates[: y.shape[0], None] * torch.tanh(y) + 1.0

    cfg = at.SolverConfig("anderson", tol=1e-9, max_iter=200, freeze_converged=True,
                          return_last=True)  # fmt: skip
    y, stats = at.solve(f, torch.zeros(2, 6, dtype=torch.float64), cfg)
    assert stats.converged.all()
    assert stats.iters == int(stats.sample_iters.max()) < cfg.max_iter
    assert true_residual(f, y) < 1e-8
