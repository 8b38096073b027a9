"""attractor.train.memory: saved-for-backward bytes against hand counts, and depth-independence."""

from __future__ import annotations

import sys
from itertools import pairwise

import pytest
import torch
from torch import nn

import attractor as at
from attractor.eval.plots import plot_results
from attractor.train.memory import UNREACHED, SavedTensors, current_rss_bytes, peak_rss_bytes

F32 = 4  # bytes


def test_linear_relu_chain_matches_hand_count():
    # x -> Linear -> ReLU -> Linear -> ReLU -> Linear, no biases. Saved for backward: x (by
    # the first matmul), each ReLU's output (saved by the ReLU and again by the next matmul:
    # one storage) and the three weights (parameters, excluded).
    B, dims = 5, (3, 7, 11, 13)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(dims[0], dims[1], bias=False),
        nn.ReLU(),
        nn.Linear(dims[1], dims[2], bias=False),
        nn.ReLU(),
        nn.Linear(dims[2], dims[3], bias=False),
    )
    x = torch.randn(B, dims[0], requires_grad=True)
    with SavedTensors(exclude=net.parameters()) as saved:
        loss = net(x).sum()
    assert saved.bytes == F32 * B * (dims[0] + dims[1] + dims[2])
    assert saved.storages == 3
    assert saved.excluded_bytes == F32 * sum(a * b for a, b in pairwise(dims))
    loss.backward()  # the hooks left the graph usable
    assert x.grad is not None and x.grad.shape == x.shape


def test_parameters_counted_when_not_excluded():
    lin = nn.Linear(6, 4, bias=False)
    x = torch.randn(3, 6, requires_grad=True)
    with SavedTensors() as saved:
        lin(x).sum()
    assert saved.bytes == F32 * (3 * 6 + 6 * 4)
    assert saved.excluded_bytes == 0


def test_view_counts_its_whole_storage_once():
    base = torch.randn(4, 6)
    w = torch.randn(6, requires_grad=True)
    with SavedTensors(exclude=[w]) as saved:
        (base[:2] * w).sum() + (base[2:] * w).sum()  # two views of one storage
    assert saved.bytes == F32 * 4 * 6
    assert saved.storages == 1


def test_nothing_saved_without_grad():
    lin = nn.Linear(8, 8)
    with torch.no_grad(), SavedTensors() as saved:
        lin(torch.randn(2, 8))
    assert saved.bytes == saved.excluded_bytes == saved.storages == 0


class _SavesAnExtra(torch.autograd.Function):
    """y = 2 x; saves x and a (3,) tensor of its own: a custom Function's saves."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x, torch.zeros(3))
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        return 2 * g


def test_by_op_attributes_each_storage_to_the_first_node_that_saved_it():
    # a = exp(x): Exp saves a, and Mm saves a again (one storage: Exp's); b = a W: Mm
    # also saves W (a parameter, excluded); c = tanh(b): Tanh saves c, and Pow saves c
    # again (Tanh's); d = c^3: Pow saves no output; e = sin(d): Sin saves d; f: the
    # custom Function saves e and a (3,) tensor; the sum saves nothing.
    x = torch.randn(5, 7, requires_grad=True)
    w = torch.randn(7, 11, requires_grad=True)
    with SavedTensors(exclude=[w]) as saved:
        e = x.exp().mm(w).tanh().pow(3).sin()
        loss = _SavesAnExtra.apply(e).sum()
    split = saved.by_op(loss)
    assert split == {
        "ExpBackward0": F32 * 5 * 7,
        "TanhBackward0": F32 * 5 * 11,
        "SinBackward0": F32 * 5 * 11,
        "_SavesAnExtraBackward": F32 * (5 * 11 + 3),
    }
    assert sum(split.values()) == saved.bytes
    assert list(split) == sorted(split, key=split.get, reverse=True)  # largest first


def test_by_op_puts_saves_of_other_graphs_under_unreached():
    x = torch.randn(4, 6, requires_grad=True)
    with SavedTensors() as saved:
        loss = x.exp().sum()
        x.tanh().sum()  # its graph is dropped at once; the hook still counted tanh(x)
        other = x.sigmoid().sum()
    assert saved.by_op(loss) == {"ExpBackward0": F32 * 24, UNREACHED: 2 * F32 * 24}
    assert saved.by_op(loss, other) == {
        "ExpBackward0": F32 * 24, "SigmoidBackward0": F32 * 24, UNREACHED: F32 * 24
    }  # fmt: skip


def test_by_op_sums_to_bytes_on_a_training_step():
    torch.manual_seed(0)
    model = at.build_model(
        kind="attractor", vocab_size=64, dim=32, n_heads=2, n_backbone=1, n_head_layers=1,
        max_seq_len=16, fixed_point={"backward": "neumann"},
    ).train()  # fmt: skip
    ids = torch.randint(64, (2, 17), generator=torch.Generator().manual_seed(0))
    with SavedTensors(exclude=model.parameters()) as saved:
        loss = model(ids[:, :-1], labels=ids[:, 1:]).loss
    split = saved.by_op(loss)
    assert sum(split.values()) == saved.bytes > 0
    assert UNREACHED not in split
    loss.backward()


def _attractor_saved(depth: int) -> int:
    solver = at.SolverConfig("anderson", tol=0.0, max_iter=depth, min_iter=depth)
    torch.manual_seed(0)
    model = at.build_model(
        kind="attractor", vocab_size=64, dim=32, n_heads=2, n_backbone=1, n_head_layers=1,
        max_seq_len=16, fixed_point=at.FixedPointConfig(train_solver=solver, backward="jfb"),
    ).train()  # fmt: skip
    ids = torch.randint(64, (2, 17), generator=torch.Generator().manual_seed(0))
    with SavedTensors(exclude=model.parameters()) as saved:
        out = model(ids[:, :-1], labels=ids[:, 1:])
    assert out.solver.iters == depth
    return saved.bytes


def _looped_saved(depth: int) -> int:
    torch.manual_seed(0)
    model = at.build_model(
        kind="looped", vocab_size=64, dim=32, n_heads=2, max_seq_len=16, n_prelude=1,
        n_recurrent=1, n_coda=1, backprop_depth=depth,
    ).train()  # fmt: skip
    ids = torch.randint(64, (2, 17), generator=torch.Generator().manual_seed(0))
    with SavedTensors(exclude=model.parameters()) as saved:
        out = model(ids[:, :-1], labels=ids[:, 1:], depth=depth)
    assert out.depth == depth
    return saved.bytes


def test_attractor_jfb_saved_bytes_constant_in_depth_looped_linear():
    assert _attractor_saved(2) == _attractor_saved(8) > 0
    looped = {t: _looped_saved(t) for t in (2, 4, 8)}
    per_recurrence = (looped[4] - looped[2]) / 2
    assert per_recurrence > 0
    assert looped[8] - looped[4] == pytest.approx(4 * per_recurrence)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_rss_readings_are_bytes():
    before = current_rss_bytes()
    block = torch.ones(64 * 2**20 // F32)  # 64 MiB, every page written
    assert current_rss_bytes() >= before + 60 * 2**20
    assert peak_rss_bytes() >= current_rss_bytes() - 2**20
    del block


def test_memory_vs_depth_plot(tmp_path):
    rows = [{"T": t, "saved_mib": 1.0 * t, "peak_rss_increase_mib": 2.0} for t in (4, 8)]
    result = {
        "result": "memory_vs_depth",
        "batch": 2,
        "seq_len": 16,
        "depths": [4, 8],
        "configs": {"attractor-jfb": {"rows": rows}, "looped-full": {"rows": rows}},
    }
    out = plot_results(result, tmp_path / "memory.png")
    assert out.stat().st_size > 0
    with pytest.raises(ValueError, match="malformed"):
        plot_results({"result": "memory_vs_depth"}, tmp_path / "bad.png")
