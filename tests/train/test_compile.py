"""train.compile: the blocks compiled by torch.compile (inductor on the CPU) give the eager
outputs and gradients within 1e-5; a compile that fails falls back to eager, with one
warning line."""

import logging
import os
import shutil
import warnings

import torch

from attractor.nn import Block
from attractor.train.compile import compile_blocks, compiled_blocks_failed
from attractor.train.config import load_config
from attractor.train.trainer import Trainer

HAVE_CXX = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def step(model, ids, depth=None):
    """Loss, logits and every parameter's gradient of one training forward."""
    labels = torch.roll(ids, -1, 1)
    out = model(ids, labels=labels, depth=depth)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out.loss, params, allow_unused=True)
    return out, grads


def assert_close(a, b, tol):
    (out_a, grads_a), (out_b, grads_b) = a, b
    assert abs(float(out_a.loss.detach()) - float(out_b.loss.detach())) <= tol
    assert float((out_a.logits - out_b.logits).abs().max()) <= tol
    for ga, gb in zip(grads_a, grads_b, strict=True):
        assert (ga is None) == (gb is None)
        if ga is not None:
            assert float((ga - gb).abs().max()) <= tol


def test_compiled_blocks_match_eager(tiny_lm):
    # the attractor: backbone blocks and the head's gated blocks, with a solve between
    eager, compiled = tiny_lm("attractor").train(), tiny_lm("attractor").train()
    n = compile_blocks(compiled)
    assert n == sum(isinstance(m, Block) for m in eager.modules()) > 0
    ids = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(0))
    depth = 4  # the same iterations on both sides
    got = step(compiled, ids, depth)
    if not HAVE_CXX:  # inductor needs a C++ compiler on the CPU: then the fallback runs
        warnings.warn("no C++ toolchain: compiled blocks fell back to eager", stacklevel=1)
        assert compiled_blocks_failed(compiled)
        assert_close(got, step(eager, ids, depth), 0.0)
        return
    assert not compiled_blocks_failed(compiled)  # really compiled, not the fallback
    assert_close(got, step(eager, ids, depth), 1e-5)
    # and the model's own solve, stopping on its tolerance
    (out_c, _), (out_e, _) = step(compiled, ids), step(eager, ids)
    assert out_c.depth == out_e.depth
    assert float((out_c.logits - out_e.logits).abs().max()) <= 1e-5


def broken_backend(gm, example_inputs):
    raise RuntimeError("this backend cannot compile anything\nsecond line")


def test_a_failed_compile_falls_back_to_eager_with_one_warning(tiny_lm, caplog):
    eager, compiled = tiny_lm("attractor").train(), tiny_lm("attractor").train()
    compile_blocks(compiled, backend=broken_backend)
    ids = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(1))
    with caplog.at_level(logging.WARNING, logger="attractor.train.compile"):
        got = step(compiled, ids, depth=3)
        step(compiled, ids, depth=3)  # later calls stay eager, silently
    assert compiled_blocks_failed(compiled)
    assert_close(got, step(eager, ids, depth=3), 0.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("train.compile: torch.compile failed (")
    assert lines[0].endswith("the blocks run eager")


def test_train_compile_compiles_the_run_model(tmp_path, monkeypatch):
    calls = []

    def fake_compile(fn, **options):
        calls.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = load_config(None, [
        "model.preset=gpt-cpu", "model.overrides={vocab_size: 257, dim: 32, n_heads: 2, "
        "n_layers: 2, max_seq_len: 32}", "data.seq_len=16", "data.batch_size=2",
        "train.steps=1", "train.eval_every=0", "train.progress=false", "train.device=cpu",
        f"train.out_dir={tmp_path}", "train.compile=true",
    ])  # fmt: skip
    trainer = Trainer(cfg)
    assert len(calls) == 2 and all(c.__self__ in trainer.raw.blocks for c in calls)
    assert trainer.train_step().loss > 0
