"""The noise floor: a low-precision map's residual stops falling near its unit roundoff; the
solver stops there (stalled) instead of running to max_iter, and a map that truly does not
converge still runs to max_iter, unconverged and not stalled."""

import math

import pytest
import torch
from maps import scaled_matrix

import attractor as at
from attractor.engine.solve import noise_ceiling

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


def bf16_map(d: int = 64, batch: int = 4, seed: int = 0):
    """f(y) = tanh(W y + c) with W, c and the arithmetic in bfloat16 (|W|_2 = 0.6): a
    contraction whose rounding leaves a residual floor near 2^-8."""
    w = scaled_matrix(d, 0.6, seed).to(torch.bfloat16)
    c = 0.3 * torch.randn(batch, d, generator=torch.Generator().manual_seed(seed))
    c = c.to(torch.bfloat16)
    return (lambda y, active=None: torch.tanh(y @ w.T + c)), c


def test_the_ceiling_is_two_eps_of_the_precision_f_computes_in():
    assert noise_ceiling(torch.zeros(1, dtype=torch.float32)) == 2 * 2**-23
    assert noise_ceiling(torch.zeros(1, dtype=torch.float64)) == 2 * 2**-52
    assert noise_ceiling(torch.zeros(1, dtype=torch.bfloat16)) == 2 * 2**-7
    assert noise_ceiling(torch.zeros(1, dtype=torch.float16)) == 2 * 2**-10
    with BF16:  # autocast lowers the precision f computes in, whatever y0's dtype
        assert noise_ceiling(torch.zeros(1, dtype=torch.float32)) == 2 * 2**-7
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert noise_ceiling(torch.zeros(1, dtype=torch.float32)) == 2 * 2**-23


def test_a_bf16_map_stalls_at_its_floor_instead_of_running_to_max_iter():
    f, c = bf16_map()
    stalled_cfg = at.SolverConfig("anderson", tol=1e-9, max_iter=100)
    _, stats = at.solve(f, c, stalled_cfg)
    assert stats.iters < 20 and stats.stalled.all() and not stats.converged.any()
    floor = stats.floor
    assert floor is not None and 1e-4 < floor < noise_ceiling(c)
    assert stats.residual.max() == floor
    # before: without stall detection the same solve spends all of max_iter at that floor
    _, before = at.solve(
        f, c, at.SolverConfig("anderson", tol=1e-9, max_iter=100, stall_patience=0)
    )
    assert before.iters == 100 and not before.stalled.any() and not before.converged.all()


def test_the_floor_is_what_the_map_itself_reaches():
    # the solver's floor against f's own rounding: |f(y*) - y*| at a float64 fixed point,
    # recomputed in bf16, is the noise any bf16 iterate sees
    f, c = bf16_map(seed=1)
    _, stats = at.solve(f, c, at.SolverConfig("anderson", tol=1e-9, max_iter=100))
    w = scaled_matrix(64, 0.6, 1)
    c64 = c.double()
    y64, exact = at.solve(
        lambda y: torch.tanh(y @ w.T + c64), c64, at.SolverConfig(tol=1e-13, max_iter=200)
    )
    assert exact.converged.all()
    noise = (f(y64.to(torch.bfloat16)).double() - y64).norm(dim=1) / y64.norm(dim=1)
    assert float(stats.residual.max()) < 2 * float(noise.max())


@pytest.mark.parametrize("method", ["anderson", "picard"])
@pytest.mark.parametrize("scale", [1.0, 1.05])
def test_a_map_that_does_not_converge_runs_to_max_iter_unconverged_not_stalled(method, scale):
    # a rotation by 60 degrees in each plane (scaled: 1.05 expands) has no attracting fixed
    # point near y0; under bf16 autocast the ceiling is bf16's, the residual far above it
    d = 16
    theta = math.pi / 3
    block = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    rot = scale * torch.block_diag(*[block] * (d // 2))
    y0 = torch.randn(3, d, generator=torch.Generator().manual_seed(0))
    cfg = at.SolverConfig(method, tol=1e-3, max_iter=40, diverge_above=1e30)
    with BF16:
        _, stats = at.solve(lambda y, active=None: y @ rot.T, y0, cfg)
    assert stats.iters == 40
    assert not stats.converged.any() and not stats.stalled.any() and not stats.diverged.any()
    assert stats.floor is None


def test_stalling_waits_for_min_iter_and_a_fixed_depth_runs_every_iteration():
    f, c = bf16_map(seed=2)
    _, stats = at.solve(f, c, at.SolverConfig("anderson", tol=1e-9, max_iter=100, min_iter=30))
    assert stats.iters == 30 and stats.stalled.all()
    _, fixed = at.solve(f, c, at.SolverConfig("anderson").at_depth(40))
    assert fixed.iters == 40


def test_frozen_stalled_samples_stop_iterating():
    f, c = bf16_map(seed=3)
    cfg = at.SolverConfig("anderson", tol=1e-9, max_iter=100, freeze_converged=True)
    _, stats = at.solve(f, c, cfg)
    assert stats.stalled.all() and stats.iters < 20
    assert (stats.sample_iters <= stats.iters).all()


def test_float32_at_a_reachable_tol_never_stalls():
    f, c = bf16_map(seed=4)
    w = scaled_matrix(64, 0.6, 4).float()
    c32 = c.float()
    _, stats = at.solve(lambda y: torch.tanh(y @ w.T + c32), c32, at.SolverConfig(tol=1e-6))
    assert stats.converged.all() and not stats.stalled.any()


def test_the_iterates_are_float32_for_a_bf16_map():
    seen = []
    f, c = bf16_map(seed=5)

    def spy(y, active=None):
        seen.append(y.dtype)
        return f(y)

    y, stats = at.solve(spy, c, at.SolverConfig("anderson", tol=1e-6, max_iter=30))
    assert set(seen) == {torch.bfloat16} and y.dtype == torch.bfloat16  # f sees its dtype
    assert torch.finfo(stats.residual.dtype).bits >= 32


def test_negative_patience_is_one_clear_error():
    with pytest.raises(ValueError, match=r"^solver: stall_patience must be >= 0 \(0: never"):
        at.SolverConfig(stall_patience=-1)
