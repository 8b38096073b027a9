"""Language-model metrics: validation loss, perplexity, bits per byte, solver iterations.

loss = -(1/N) sum_t log p(y_t | x_<=t)      (nats per target token)
ppl  = exp(loss)
bpb  = loss * N / (bytes * ln 2) = loss / (ln 2 * bytes_per_token)
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from attractor.engine import SolverStats
from attractor.models import LanguageModel
from attractor.models.language_model import IGNORE_INDEX

LN2 = math.log(2.0)


class WindowSource(Protocol):
    """Anything that serves (x, y) token windows: `Windows`, `ShardWindows`."""

    def __len__(self) -> int: ...

    def batch(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """x, y of the windows at `indices`, each (len(indices), seq_len)."""
        ...


def token_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """-log softmax(logits)[label] per position, (B, T) float32; 0 where labels is -100."""
    nll = F.cross_entropy(
        logits.float().flatten(0, 1),
        labels.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return nll.view(labels.shape)


def _iteration_counts(stats: SolverStats, batch: int) -> Tensor:
    """Solver iterations per position, (B, T) (per sequence, (B, 1), for solvers that see
    whole sequences as one sample)."""
    per_sample = stats.sample_iters
    if per_sample is None:
        per_sample = torch.full((batch,), stats.iters)
    return per_sample.view(batch, -1).float()


def _forward(model: LanguageModel, x: Tensor, depth: int | None):
    return model(x) if depth is None else model(x, depth=depth)


@torch.no_grad()
def evaluate_lm(
    model: LanguageModel,
    windows: WindowSource,
    batch_size: int = 8,
    max_batches: int | None = None,
    depth: int | None = None,
    bytes_per_token: float | None = None,
    progress: bool = False,
    max_windows: int | None = None,
) -> dict[str, float | int]:
    """Mean next-token loss over windows[0 : min(batch_size * max_batches, max_windows)],
    its perplexity and, given bytes_per_token, bits per byte; for solver models also the
    mean iterations per position (`iters_mean`) and the mean over sequences of their
    deepest position (`iters_max_mean`). `depth` is the model's fixed depth T (None: its
    own default)."""
    n = len(windows)
    if n == 0 or batch_size < 1:
        raise ValueError(f"evaluate: need windows and batch_size >= 1, got {n} and {batch_size}")
    if max_windows is not None:
        if max_windows < 1:
            raise ValueError(f"evaluate: max_windows must be >= 1, got {max_windows}")
        n = min(n, max_windows)
    n_batches = math.ceil(n / batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll_sum, tokens, sequences = 0.0, 0, 0
    iter_sum, iter_positions, iter_max_sum = 0.0, 0, 0.0
    batches = range(n_batches)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="eval", unit="batch", leave=False, disable=None)
    try:
        for b in batches:
            x, y = windows.batch(list(range(b * batch_size, min(n, (b + 1) * batch_size))))
            x, y = x.to(device), y.to(device)
            out = _forward(model, x, depth)
            nll_sum += float(token_nll(out.logits, y).sum(dtype=torch.float64))
            tokens += int((y != IGNORE_INDEX).sum())
            sequences += x.size(0)
            if out.solver is not None:
                counts = _iteration_counts(out.solver, x.size(0))  # (B, T) or (B, 1)
                iter_sum += float(counts.sum())
                iter_positions += counts.numel()
                iter_max_sum += float(counts.max(dim=1).values.sum())
    finally:
        model.train(was_training)
    loss = nll_sum / max(tokens, 1)
    result: dict[str, float | int] = {
        "loss": loss,
        "ppl": math.exp(loss) if loss < 700 else math.inf,
        "tokens": tokens,
        "windows": sequences,
    }
    if bytes_per_token:
        result["bpb"] = loss / (LN2 * bytes_per_token)
    if iter_positions:
        result["iters_mean"] = iter_sum / iter_positions
        result["iters_max_mean"] = iter_max_sum / sequences
    return result
