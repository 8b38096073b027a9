"""Grid puzzles for the shared trainer: deep supervision with a halting head (TRM protocol).

The task keeps a batch of puzzles "in flight" between optimizer steps, as TRM does: each
call to `loss` is one supervision step of every row, from the carried latent state, and the
state moves on. A row leaves the batch when it has run `n_sup` steps or when its halting
logit is positive (after a random minimum of steps with probability `halt_explore`); the
next `next_batch` refills it with a fresh, freshly augmented puzzle from this rank's shard.
Models without a carried state run one step per puzzle.

Loss per step: stable-max cross-entropy over every cell + 0.5 x BCE of the halting logit
against "the whole grid is right" (TRM; one-pass models train the head too, unused).
The carried state is not checkpointed: a resumed run starts its in-flight puzzles over.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attractor.data.puzzles import PuzzleDataset, load_split
from attractor.data.sampler import ShardedSampler
from attractor.models.grid import GridModel, GridOutput, halting_loss, stablemax_cross_entropy
from attractor.models.grid_metrics import puzzle_totals, summarize
from attractor.train.config import DataConfig
from attractor.train.distributed import DistInfo, all_reduce_mean, unwrap

HALT_WEIGHT = 0.5


class PuzzleTask:
    """Deep supervision over a saved split (`attractor.data.puzzles.save_split`)."""

    eval_fields = (
        "exact_acc",
        "cell_acc",
        "cell_acc_all",
        "halt_step",
        "halt_exact_acc",
        "val_solver_iters",
    )

    def __init__(self, cfg: DataConfig, info: DistInfo, model: GridModel):
        self.cfg, self.info, self.model = cfg, info, model
        try:
            train, test, record = load_split(cfg.source)
        except FileNotFoundError as err:
            raise ValueError(
                f"data.source: {err}. Make a split with `attractor data puzzles --out DIR`"
            ) from None
        self.train = PuzzleDataset(
            train, record["kind"], augment=cfg.augment, seed=cfg.seed, pool=cfg.augment_pool
        )
        self.test = PuzzleDataset(test, record["kind"], augment=False)
        self.sampler = ShardedSampler(
            len(self.train), rank=info.rank, world_size=info.world_size, seed=cfg.seed
        )
        self._draw = self.sampler.batches(1)
        B, L = cfg.batch_size, model.config.cells
        self.inputs = torch.zeros(B, L, dtype=torch.long, device=info.device)
        self.labels = torch.zeros(B, L, dtype=torch.long, device=info.device)
        self.carry: Tensor | None = None
        self.steps = torch.zeros(B, dtype=torch.long, device=info.device)
        self.halted = torch.ones(B, dtype=torch.bool, device=info.device)
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + info.rank)

    def tokens_per_batch(self) -> int:
        return self.cfg.batch_size * self.model.config.cells

    def step_flops(self, model: GridModel, out: GridOutput) -> float:
        """Training FLOPs of one supervision step of the batch, as the model counts them."""
        return model.train_flops(out, tuple(self.inputs.shape))

    def next_batch(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """Refill the rows that halted with fresh puzzles; (inputs, labels, carry)."""
        rows = self.halted.nonzero().squeeze(1).tolist()
        for row in rows:
            (index,) = next(self._draw)
            self.train.set_epoch(self.sampler.epoch)
            item = self.train[index]
            self.inputs[row], self.labels[row] = item["inputs"], item["labels"]
        if rows:
            self.steps[rows] = 0
            fresh = self.model.initial_carry(len(self.steps))
            if fresh is not None:
                if self.carry is None:
                    self.carry = fresh
                else:
                    self.carry[rows] = fresh[rows].to(self.carry.dtype)
        return self.inputs, self.labels, self.carry

    def loss(
        self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor | None]
    ) -> tuple[Tensor, GridOutput]:
        """One supervision step of every row; moves the rows' state and halting on."""
        inputs, labels, carry = batch
        out = model(inputs, carry=carry)
        # every model trains its halting head (a one-pass model's is only reported), so
        # every parameter gets a gradient, as DDP requires
        loss = stablemax_cross_entropy(out.logits, labels) + HALT_WEIGHT * halting_loss(out, labels)
        self._advance(out)
        return loss, out

    def _advance(self, out: GridOutput) -> None:
        """Count the step; halt rows that ran n_sup steps or whose halting logit is > 0."""
        if not self.model.recurrent:
            self.halted.fill_(True)
            return
        self.carry = out.carry
        self.steps += 1
        c = self.model.config
        B = len(self.steps)
        explore = torch.rand(B, generator=self.gen) < c.halt_explore
        floor = torch.randint(2, c.n_sup + 1, (B,), generator=self.gen) * explore
        stop = (out.halt_logits.detach() > 0) & (self.steps >= floor.to(self.steps.device))
        self.halted = (self.steps >= c.n_sup) | stop

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: int) -> dict[str, float]:
        """Every supervision step on the first `batches` x batch_size test puzzles."""
        n = min(len(self.test), batches * self.cfg.batch_size)
        mine = list(range(self.info.rank, n, self.info.world_size))
        batches = self.test.batches(mine, self.cfg.batch_size, self.info.device)
        totals = puzzle_totals(unwrap(model), batches)
        totals = all_reduce_mean(totals.to(self.info.device)) * self.info.world_size
        metrics = summarize(totals.cpu())
        if "solver_iters" in metrics:  # not the training step's own solver_iters
            metrics["val_solver_iters"] = metrics.pop("solver_iters")
        return metrics

    def export(self, directory: Any) -> None:
        """Nothing besides the model: its config holds the grid geometry."""

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self._draw = self.sampler.batches(1)
        self.halted.fill_(True)
