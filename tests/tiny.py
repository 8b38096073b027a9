"""The tiny byte-level Attractor LM and checkpoint directory that several tests share."""

from __future__ import annotations

from pathlib import Path

import torch

import attractor as at
from attractor.data.tokenizer import ByteTokenizer

SOLVER = at.SolverConfig("anderson", tol=1e-4, max_iter=12, freeze_converged=True)


def tiny_attractor(max_seq_len: int = 64, **fields) -> at.models.base.LanguageModel:
    """A seeded 2+1-block, width-32 Attractor LM over the 257 byte tokens."""
    torch.manual_seed(0)
    shape = dict(vocab_size=257, dim=32, n_heads=4, n_backbone=2, n_head_layers=1)
    return at.build_model(
        kind="attractor", max_seq_len=max_seq_len, eval_solver=SOLVER, **{**shape, **fields}
    )


def save_with_bytes(model, directory: Path) -> Path:
    """A checkpoint directory: save_pretrained plus the byte tokenizer."""
    model.save_pretrained(directory)
    ByteTokenizer().save(directory)
    return directory
