"""Shared test setup: tests/ on sys.path (the helper modules maps.py and spawn.py), and the
tiny-model factories several test files share, as fixtures.

The factories are session-scoped fixtures that return functions, so that module-scoped
fixtures can use them too and each test builds exactly the model it asks for:

    def test_x(tiny_attractor, byte_checkpoint, tmp_path):
        directory = byte_checkpoint(tiny_attractor(max_seq_len=32), tmp_path / "model")
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# The tiny byte-level LMs: 257 tokens (256 bytes + end of text), width 32, 4 heads.
LM_SHAPE = dict(vocab_size=257, dim=32, n_heads=4)
LM_LAYERS = {
    "attractor": dict(n_backbone=2, n_head_layers=1),
    "gpt": dict(n_layers=2),
    "looped": dict(n_prelude=1, n_recurrent=1, n_coda=1, eval_depth=4),
    "deq": dict(n_layers=1),
}


def _attractor_solver() -> Any:
    """Anderson to 1e-4 in at most 12 iterations, every position stopping on its own."""
    from attractor.engine import SolverConfig

    return SolverConfig("anderson", tol=1e-4, max_iter=12, freeze_converged=True)


@pytest.fixture(scope="session")
def tiny_lm() -> Callable[..., Any]:
    """`tiny_lm(kind, **fields)`: a seeded 2-3 block, width-32 language model of `kind`
    (attractor, gpt, looped, deq) over the 257 byte tokens, max_seq_len 64 unless given;
    the attractor solves with `_attractor_solver` in training and evaluation unless
    `fixed_point` is given."""
    import torch

    from attractor.engine import FixedPointConfig
    from attractor.models import build_model

    def make(kind: str = "attractor", **fields: Any) -> Any:
        torch.manual_seed(0)
        base: dict[str, Any] = dict(LM_SHAPE, max_seq_len=64, **LM_LAYERS[kind])
        if kind == "attractor":
            solver = _attractor_solver()
            base["fixed_point"] = FixedPointConfig(train_solver=solver, eval_solver=solver)
        return build_model(kind=kind, **{**base, **fields})

    return make


@pytest.fixture(scope="session")
def tiny_attractor(tiny_lm: Callable[..., Any]) -> Callable[..., Any]:
    """`tiny_attractor(max_seq_len=64, **fields)`: the seeded 2+1-block, width-32 Attractor
    LM over the 257 byte tokens (see `tiny_lm`)."""

    def make(max_seq_len: int = 64, **fields: Any) -> Any:
        return tiny_lm("attractor", max_seq_len=max_seq_len, **fields)

    return make


@pytest.fixture(scope="session")
def tiny_reasoner() -> Callable[..., Any]:
    """`tiny_reasoner(side=6, box_rows=2, box_cols=3, vocab_size=8)`: an untrained, seeded
    width-32, one-block reasoner (from reasoner-joint-cpu): 2 supervision steps, each solve
    Anderson to 1e-2 in 1 to 3 iterations. A maze is side=N, box_rows=box_cols=0."""
    import torch

    from attractor.engine import FixedPointConfig, SolverConfig
    from attractor.models import build_model

    solver = SolverConfig("anderson", tol=1e-2, max_iter=3, min_iter=1)

    def make(side: int = 6, box_rows: int = 2, box_cols: int = 3, vocab_size: int = 8) -> Any:
        torch.manual_seed(0)
        return build_model(
            "reasoner-joint-cpu",
            side=side,
            box_rows=box_rows,
            box_cols=box_cols,
            vocab_size=vocab_size,
            dim=32,
            n_heads=2,
            n_layers=1,
            n_sup=2,
            fixed_point=FixedPointConfig(train_solver=solver, eval_solver=solver),
        )

    return make


@pytest.fixture(scope="session")
def byte_checkpoint() -> Callable[[Any, Path], Path]:
    """`byte_checkpoint(model, directory)`: an exported-model directory (save_pretrained
    plus the byte tokenizer), returned."""
    from attractor.data.tokenizer import ByteTokenizer

    def save(model: Any, directory: Path) -> Path:
        model.save_pretrained(directory)
        ByteTokenizer().save(directory)
        return Path(directory)

    return save
