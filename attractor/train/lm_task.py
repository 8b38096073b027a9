"""Next-token prediction for the shared trainer: the language-model task."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attractor.data.lm import text_split
from attractor.data.sampler import ShardedSampler
from attractor.models import LanguageModel, ModelOutput
from attractor.train.config import DataConfig
from attractor.train.distributed import DistInfo, all_reduce_mean


class LanguageModelingTask:
    """Next-token prediction on (x, y) windows, each rank reading its own shard."""

    eval_fields = ("val_loss", "val_ppl")

    def __init__(self, cfg: DataConfig, info: DistInfo, vocab_size: int):
        self.cfg, self.info = cfg, info
        self.split = text_split(
            cfg.source, cfg.seq_len, cfg.val_fraction, cfg.seed, vocab_size, cfg.batch_size
        )
        self.train, self.val, self.tokenizer = (
            self.split.train,
            self.split.val,
            self.split.tokenizer,
        )
        self.sampler = ShardedSampler(
            len(self.train), rank=info.rank, world_size=info.world_size, seed=cfg.seed
        )
        self._batches = self.sampler.batches(cfg.batch_size)

    def tokens_per_batch(self) -> int:
        return self.cfg.batch_size * self.cfg.seq_len

    def next_batch(self) -> tuple[Tensor, Tensor]:
        x, y = self.train.batch(next(self._batches))
        return x.to(self.info.device), y.to(self.info.device)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, ModelOutput]:
        """The mean next-token loss, computed in chunks: the (B, T, V) logits are never made."""
        x, y = batch
        out = model(x, labels=y, return_logits=False)
        return out.loss, out

    def step_flops(self, model: LanguageModel, out: ModelOutput) -> float:
        """Training FLOPs of one micro-batch, as the model counts them from what it ran."""
        return model.train_flops(out, (self.cfg.batch_size, self.cfg.seq_len))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: int) -> dict[str, float]:
        """Mean validation loss over the first `batches` batches (shared out over ranks)."""
        n = min(len(self.val), batches * self.cfg.batch_size)
        mine = list(range(self.info.rank, n, self.info.world_size))
        total = torch.zeros(2, device=self.info.device)  # loss sum, windows
        for i in range(0, len(mine), self.cfg.batch_size):
            x, y = self.val.batch(mine[i : i + self.cfg.batch_size])
            out = model(x.to(self.info.device), labels=y.to(self.info.device))
            total[0] += out.loss.float() * x.shape[0]
            total[1] += x.shape[0]
        total = all_reduce_mean(total)
        loss = float(total[0] / total[1].clamp_min(1))
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}

    def export(self, directory: Path) -> None:
        """Save the tokenizer beside the exported model."""
        self.tokenizer.save(directory)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self._batches = self.sampler.batches(self.cfg.batch_size)
