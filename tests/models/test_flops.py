"""FLOP counts against every matrix multiply seen by PyTorch's dispatcher, on tiny models."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import attractor as at
from attractor.flops import train_flops_per_token

aten = torch.ops.aten


class MatmulCounter(TorchDispatchMode):
    """2 m n k FLOPs for every matrix multiply that reaches the dispatcher."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (aten.mm.default, aten.addmm.default):
            a, b = (args[0], args[1]) if func is aten.mm.default else (args[1], args[2])
            self.flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        elif func in (aten.bmm.default, aten.baddbmm.default):
            a, b = (args[0], args[1]) if func is aten.bmm.default else (args[1], args[2])
            self.flops += 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
        return out


def counted_matmul_flops(model, ids, steps):
    """Forward + backward FLOPs of the weight matrix multiplies (attention runs in SDPA)."""
    with MatmulCounter() as counter:
        model(ids, labels=ids, steps=steps).loss.backward()
    return counter.flops


@pytest.mark.parametrize(
    "kind, fields, steps, kw",
    [
        ("gpt", dict(n_layers=2, value_embeds=False), None, {}),
        ("attractor", dict(n_backbone=2, n_head_layers=1), 3, {"solver_iters": 3}),
        (
            "looped",
            dict(n_prelude=1, n_recurrent=1, n_coda=1, value_embeds=False, backprop_depth=2),
            5,
            {"depth": 5},
        ),
        ("deq", dict(n_layers=2), 4, {"solver_iters": 4}),
    ],
)
def test_weight_flops_match_the_dispatched_matmuls(kind, fields, steps, kw):
    torch.manual_seed(0)
    model = at.build_model(kind=kind, vocab_size=64, dim=32, n_heads=2, max_seq_len=16, **fields)
    model.train()
    ids = torch.randint(0, 64, (2, 16))
    ours = train_flops_per_token(model, 16, attention=False, **kw) * ids.numel()
    theirs = counted_matmul_flops(model, ids, steps)
    assert ours == pytest.approx(theirs, rel=0.02)
