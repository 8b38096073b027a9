"""Device-to-host synchronisations of a solve, counted: one per `check_every` iterations.

A read of a tensor's value on the host is a synchronisation on an accelerator. On the CPU
nothing waits, so the reads are counted where they happen: a dispatch mode counts the aten
ops that hand a value (or a value-dependent shape) to the host, and `Tensor.tolist` /
`Tensor.numpy`, which read memory without dispatching on the CPU, are counted by a patch.
"""

import math

import pytest
import torch
from maps import TanhMap
from torch.utils._python_dispatch import TorchDispatchMode

import attractor as at

# aten ops whose result the host must read: a scalar, a bool, or an output shape that
# depends on the values
HOST_OPS = {"_local_scalar_dense", "equal", "is_nonzero", "nonzero", "masked_select", "unique"}


def _bool_index(args: tuple) -> bool:
    """aten.index with a boolean mask: its output shape is the mask's count of True."""
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])


class HostSyncs(TorchDispatchMode):
    """Counts host reads of tensor values inside a ``with`` block (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in HOST_OPS or (name == "index" and _bool_index(args)):
            self._record(name)
        return func(*args, **(kwargs or {}))

    def _record(self, name: str) -> None:
        self.count += 1
        self.ops.append(name)

    def __enter__(self) -> "HostSyncs":
        self._patched = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}
        for name, method in self._patched.items():
            setattr(torch.Tensor, name, self._counting(name, method))
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        for name, method in self._patched.items():
            setattr(torch.Tensor, name, method)

    def _counting(self, name, method):
        def counted(tensor, *args, **kwargs):
            self._record(name)
            return method(tensor, *args, **kwargs)

        return counted


def test_the_counter_sees_every_kind_of_host_read():
    t = torch.tensor([1.0, 0.0, 2.0])
    reads = [
        lambda: t[0].item(),
        lambda: float(t.max()),
        lambda: bool(t.all()),
        lambda: t.tolist(),
        lambda: t.nonzero(),
        lambda: torch.equal(t, t),
        lambda: t[t > 0],
        lambda: 1 if t.any() else 0,
    ]
    for i, read in enumerate(reads):
        with HostSyncs() as syncs:
            read()
        assert syncs.count == 1, (i, syncs.ops)
    with HostSyncs() as syncs:  # device-side work alone reads nothing
        torch.where(t > 0, t, -t).sum().mul(2.0).max()
    assert syncs.count == 0


@pytest.mark.parametrize("method", ["anderson", "picard", "broyden"])
@pytest.mark.parametrize("check_every", [1, 3, 4, 5])
def test_one_sync_per_check_every_iterations(method, check_every):
    f = TanhMap(d=16, batch=4, norm=0.9, seed=0)
    cfg = at.SolverConfig(method, tol=0.0, max_iter=12, check_every=check_every)
    with torch.no_grad(), HostSyncs() as syncs:
        _, stats = at.solve(f, f.y0.detach(), cfg)
    assert stats.iters == 12 and len(stats.trace) == 12
    assert syncs.count == math.ceil(12 / check_every), syncs.ops


def test_freezing_samples_adds_no_sync():
    # sample 0 converges after a few iterations and freezes; the masked f reads nothing
    rates = torch.tensor([0.1, 0.95], dtype=torch.float64)
    told = []

    def f(y, active=None):
        told.append(active is not None)
        return rates[:, None] * torch.tanh(y) + 1.0

    cfg = at.SolverConfig("anderson", tol=1e-12, max_iter=24, check_every=2, freeze_converged=True)
    with HostSyncs() as syncs:
        _, stats = at.solve(f, torch.zeros(2, 8, dtype=torch.float64), cfg)
    assert any(told) and int(stats.sample_iters[0]) < stats.iters  # sample 0 froze
    assert syncs.count == math.ceil(stats.iters / 2), syncs.ops


def test_an_early_stop_reads_once_per_check():
    f = TanhMap(d=16, batch=4, norm=0.5, seed=1)
    cfg = at.SolverConfig("anderson", tol=1e-8, max_iter=100, check_every=2)
    with torch.no_grad(), HostSyncs() as syncs:
        _, stats = at.solve(f, f.y0.detach(), cfg)
    assert stats.converged.all() and stats.iters < 100 and stats.iters % 2 == 0
    assert syncs.count == stats.iters // 2


@pytest.mark.parametrize("backward", ["jfb", "neumann"])
def test_a_differentiable_solve_reads_only_at_the_checks(backward):
    f = TanhMap(d=16, batch=4, norm=0.9, seed=2)
    cfg = at.SolverConfig("anderson", tol=0.0, max_iter=9, check_every=3)
    with HostSyncs() as syncs:
        y, _ = at.fixed_point(f, f.y0, cfg, backward=backward)
        y.sum().backward()
    assert syncs.count == 3, syncs.ops
