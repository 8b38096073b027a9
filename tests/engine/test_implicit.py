"""Implicit gradients against autograd through a long unrolled Picard iteration, finite
differences (gradcheck), and saved-tensor byte counts."""

import gc
import os
import tempfile
import weakref

import pytest
import torch
import torch.distributed as dist
from maps import TanhMap, symmetric_matrix
from spawn import run_processes

import attractor as at

TIGHT = at.SolverConfig("anderson", tol=1e-13, max_iter=300, history=6)
ADJOINT = at.SolverConfig("anderson", tol=1e-13, max_iter=300, history=6)


def unrolled_grads(f: TanhMap, weight: torch.Tensor, steps: int = 300) -> list[torch.Tensor]:
    """Reference: autograd through `steps` explicit Picard steps from y0."""
    y = f.y0
    for _ in range(steps):
        y = f(y)
    return torch.autograd.grad((weight * y).sum(), f.params)


def implicit_grads(f: TanhMap, weight: torch.Tensor, **kw) -> list[torch.Tensor]:
    y, _ = at.fixed_point(f, f.y0, TIGHT, **kw)
    return torch.autograd.grad((weight * y).sum(), f.params)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@pytest.mark.parametrize(
    "kw",
    [
        dict(backward="adjoint", adjoint=ADJOINT),
        dict(backward="adjoint", adjoint=at.SolverConfig("picard", tol=1e-13, max_iter=400)),
        dict(backward="phantom", backward_steps=300),
        dict(backward="phantom", backward_steps=700, damping=0.5),
    ],
    ids=["adjoint-anderson", "adjoint-picard", "phantom-300", "phantom-damped"],
)
def test_exact_modes_match_unrolled_autograd(kw):
    f = TanhMap(d=16, batch=3, norm=0.9, seed=0)
    weight = torch.randn(3, 16, dtype=torch.float64)
    ref = unrolled_grads(f, weight)
    ours = implicit_grads(f, weight, **kw)
    for name, a, b in zip(["W", "U", "b", "x"], ours[:4], ref[:4], strict=True):
        assert rel_err(a, b) <= 1e-6, (name, rel_err(a, b))
    # the start y0 only enters through 0.9^300 ~ 2e-14 in the unroll; the exact value is 0
    assert ours[4].abs().max() == 0 and ref[4].abs().max() < 1e-10


def test_truncated_modes_error_shrinks_with_contraction():
    errors = {"jfb": [], "neumann": []}
    gen = torch.Generator().manual_seed(1)  # the loss weights: not the global RNG's order
    for norm in (0.9, 0.6, 0.3):
        f = TanhMap(d=16, batch=3, norm=norm, seed=1)
        weight = torch.randn(3, 16, dtype=torch.float64, generator=gen)
        exact = implicit_grads(f, weight, backward="adjoint", adjoint=ADJOINT)
        for mode in errors:
            approx = implicit_grads(f, weight, backward=mode, neumann_clip=10.0)
            errors[mode].append(rel_err(approx[0], exact[0]))  # dL/dW
    for mode, errs in errors.items():
        assert errs[0] > errs[1] > errs[2] > 0, (mode, errs)  # truncation error, shrinking
    # one more Neumann term is a better approximation at every contraction
    assert all(n < o for n, o in zip(errors["neumann"], errors["jfb"], strict=True))


def test_neumann_clip_bounds_the_second_term():
    f = TanhMap(d=16, batch=3, norm=0.9, seed=2)
    weight = torch.randn(3, 16, dtype=torch.float64)
    g_none = implicit_grads(f, weight, backward="neumann", neumann_clip=0.0)
    g_one = implicit_grads(f, weight, backward="jfb")
    for a, b in zip(g_none[:4], g_one[:4], strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_gradcheck_adjoint_on_tiny_case():
    f = TanhMap(d=4, batch=2, norm=0.7, seed=3)
    cfg = at.SolverConfig("anderson", tol=1e-14, max_iter=200)

    def run(w, u, b, x, y0):
        g = lambda y: torch.tanh(y @ w.T + x @ u.T + b)  # noqa: E731
        return at.fixed_point(g, y0, cfg, backward="adjoint", adjoint=ADJOINT)[0]

    assert torch.autograd.gradcheck(run, tuple(f.params), atol=1e-7, rtol=1e-5)


def saved_bytes(fn) -> int:
    """Bytes of every tensor autograd saves for backward while fn runs."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def test_memory_is_constant_in_solver_depth():
    f = TanhMap(d=32, batch=4, norm=0.9, seed=4)
    mem = {}
    for mode in ("jfb", "neumann", "adjoint", "phantom"):
        for depth in (4, 16, 64):
            cfg = at.SolverConfig("anderson", tol=0.0, max_iter=depth)
            mem[mode, depth] = saved_bytes(
                lambda cfg=cfg, mode=mode: at.fixed_point(f, f.y0, cfg, backward=mode)
            )
        assert mem[mode, 4] == mem[mode, 16] == mem[mode, 64] > 0, mode
    phantom_k = [
        saved_bytes(
            lambda k=k: at.fixed_point(f, f.y0, TIGHT, backward="phantom", backward_steps=k)
        )
        for k in (1, 2, 4)
    ]
    assert phantom_k[0] < phantom_k[1] < phantom_k[2]
    assert phantom_k[2] - phantom_k[1] == 2 * (phantom_k[1] - phantom_k[0])  # linear in k

    def unroll(steps):
        y = f.y0
        for _ in range(steps):
            y = f(y)
        return y

    unrolled = [saved_bytes(lambda s=s: unroll(s)) for s in (4, 16, 64)]
    assert unrolled[1] - unrolled[0] == (unrolled[2] - unrolled[1]) / 4 > 0  # linear in steps
    assert unrolled[2] > 10 * mem["jfb", 64]


def test_no_grad_records_nothing():
    f = TanhMap(d=8, batch=2, seed=5)
    with torch.no_grad():
        nbytes = saved_bytes(lambda: at.fixed_point(f, f.y0, TIGHT, backward="adjoint"))
        y, stats = at.fixed_point(f, f.y0, TIGHT, backward="adjoint")
    assert nbytes == 0 and not y.requires_grad and stats.converged.all()


class ImplicitLayer(torch.nn.Module):
    """y* = tanh(W y* + x): W is used only inside f."""

    def __init__(self, d: int, backward: str):
        super().__init__()
        self.lin = torch.nn.Linear(d, d)
        with torch.no_grad():
            self.lin.weight.mul_(0.5 / torch.linalg.matrix_norm(self.lin.weight, 2))
        self.backward = backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = at.SolverConfig(tol=1e-6, max_iter=50)
        y, _ = at.fixed_point(lambda y: torch.tanh(self.lin(y) + x), x, cfg, backward=self.backward)
        return y


@pytest.mark.parametrize("backward", ["jfb", "neumann", "adjoint", "phantom"])
def test_inside_module_under_autocast(backward):
    torch.manual_seed(0)
    layer = ImplicitLayer(16, backward)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.float32
    y.square().sum().backward()
    for p in layer.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    layer = ImplicitLayer(8, "adjoint").double()
    ddp = torch.nn.parallel.DistributedDataParallel(layer)
    x = torch.randn(2 * world, 8, dtype=torch.float64)[2 * rank : 2 * rank + 2]
    ddp(x).square().sum().backward()
    torch.save({n: p.grad for n, p in layer.named_parameters()}, f"{out_dir}/grad{rank}.pt")
    dist.destroy_process_group()


def test_ddp_parameters_inside_f_get_averaged_gradients():
    with tempfile.TemporaryDirectory() as tmp:
        run_processes(_ddp_worker, (2, os.path.join(tmp, "pg"), tmp), nprocs=2)
        grads = [torch.load(f"{tmp}/grad{r}.pt") for r in range(2)]
    torch.manual_seed(0)
    layer = ImplicitLayer(8, "adjoint").double()
    x = torch.randn(4, 8, dtype=torch.float64)
    local = []
    for r in range(2):
        layer.zero_grad()
        layer(x[2 * r : 2 * r + 2]).square().sum().backward()
        local.append({n: p.grad.clone() for n, p in layer.named_parameters()})
    for name in local[0]:
        expected = (local[0][name] + local[1][name]) / 2  # DDP averages over ranks
        for r in range(2):
            assert torch.allclose(grads[r][name], expected, rtol=1e-10, atol=1e-12), name


def test_jacobian_penalty_estimates_frobenius_norm_and_is_differentiable():
    d = 12
    a = symmetric_matrix(d, 0.8, seed=6).requires_grad_()
    f = lambda y: y @ a.T  # noqa: E731  J = a for every sample
    y = torch.randn(64, d, dtype=torch.float64)
    torch.manual_seed(0)
    pen = at.jacobian_penalty(f, y, samples=32)
    exact = a.detach().square().sum() / d
    assert abs(float(pen.detach()) - float(exact)) / float(exact) < 0.05
    (grad,) = torch.autograd.grad(pen, a)
    assert torch.allclose(grad, 2 * a.detach() / d, rtol=0.15, atol=0.02)  # d|A|_F^2/dA = 2A


def test_spectral_radius_power_iteration():
    d = 20
    a = symmetric_matrix(d, 0.7, seed=7)
    a = a + 0.15 * torch.outer(*torch.linalg.eigh(a).eigenvectors[:, -1:].T.repeat(2, 1))
    exact = float(torch.linalg.eigvals(a).abs().max())
    c = torch.randn(3, d, dtype=torch.float64)
    y = torch.randn(3, d, dtype=torch.float64)
    rho = at.spectral_radius(lambda y: torch.tanh(0 * y) + y @ a.T + c, y, iters=200)
    assert abs(rho - exact) < 1e-6


def test_bad_backward_is_a_clear_error():
    f = TanhMap(d=4, batch=2)
    with pytest.raises(
        ValueError, match="^backward: 'exact' is not one of 'jfb', 'neumann', 'adjoint', 'phantom'$"
    ):
        at.fixed_point(f, f.y0, backward="exact")
    with pytest.raises(ValueError, match=r"^backward_steps: must be >= 1 .*, got 0$"):
        at.fixed_point(f, f.y0, backward="phantom", backward_steps=0)


def test_jacobian_penalty_at_a_solved_point_backpropagates_with_the_loss():
    f = TanhMap(d=8, batch=2, norm=0.8, seed=9)
    y, _ = at.fixed_point(f, f.y0, TIGHT, backward="adjoint")
    pen = at.jacobian_penalty(f, y, samples=2)
    (y.sum() + pen).backward()  # the penalty must not re-enter the adjoint hook on y
    assert torch.isfinite(f.W.grad).all() and f.W.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("backward", "k", "a"),
    [("jfb", 1, 1.0), ("neumann", 1, 1.0), ("adjoint", 1, 1.0), ("phantom", 1, 1.0),
     ("phantom", 2, 1.0), ("phantom", 3, 0.5)],
)  # fmt: skip
def test_value_is_the_same_with_and_without_gradients(backward, k, a):
    """What training decodes is what evaluation decodes: 5 Picard steps, then (phantom)
    the k damped steps from the 5th step's pre-image, with and without autograd."""
    f = TanhMap(d=8, batch=2, norm=0.9, seed=10)
    cfg = at.SolverConfig("picard", tol=0.0, max_iter=5)
    kw = dict(backward=backward, backward_steps=k, damping=a)
    with torch.no_grad():
        y_plain, _ = at.fixed_point(f, f.y0, cfg, **kw)
    y_grad, _ = at.fixed_point(f, f.y0, cfg, **kw)
    assert y_grad.requires_grad
    torch.testing.assert_close(y_grad.detach(), y_plain, rtol=0, atol=1e-15)
    x = f.y0.detach()
    for _ in range(4):
        x = f(x).detach()
    for _ in range(k):  # the pre-image f^4(y0), then k damped steps (jfb etc.: k = 1)
        x = ((1 - a) * x + a * f(x)).detach()
    assert torch.allclose(y_plain, x, rtol=0, atol=1e-15)


@pytest.mark.parametrize("backward", ["jfb", "neumann", "adjoint", "phantom"])
def test_the_graph_of_a_solve_is_freed_after_backward_without_the_cyclic_collector(backward):
    # The neumann and adjoint hooks hold z and z's graph holds them: unless the cycle is
    # broken after use, every training step leaks one graph until gc runs.
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(3, 8)
    cfg = at.SolverConfig("anderson", tol=1e-6, max_iter=40)
    gc.collect()
    gc.disable()
    try:
        y, _ = at.fixed_point(lambda y: torch.tanh(0.5 * layer(y) + x), torch.zeros(3, 8), cfg,
                           backward=backward)  # fmt: skip
        y.sum().backward()
        alive = weakref.ref(y)
        del y
        assert alive() is None
    finally:
        gc.enable()
