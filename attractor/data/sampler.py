"""Sharding a dataset of n examples across data-parallel ranks, with exact resume.

Each epoch e draws one permutation p_e of range(n) from a torch.Generator seeded with
seed + e; rank r of W takes the positions r, r + W, r + 2W, ... of p_e:

    shard_r(e) = p_e[r::W]

The W shards of an epoch are disjoint and their union is range(n): every example is seen
exactly once per epoch. (The paper's code sharded so that about a third of the tokens were
never seen; tests/data/test_sampler.py shows the pattern and checks that ours covers 100 %.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor


class ShardedSampler:
    """Rank `rank`'s share of a per-epoch permutation of range(n): p_e[rank::world_size].

    When n % world_size != 0, ranks r < n % world_size get ceil(n / W) indices per epoch and
    the others floor(n / W): one more on the first ranks. Nothing is dropped, nothing is
    repeated or padded. Because the counts can differ, a loop that runs each rank "to the end
    of its epoch" can make ranks take different numbers of steps (and DDP hang); a trainer
    should instead pull a fixed number of steps from `batches()`, which runs across epochs
    forever, so every rank takes the same number of batches of the same size.

    State is (epoch, position): `position` indices of this rank's shard of `epoch` have been
    handed out, by `__iter__` or `batches()`. `state_dict()` taken after a batch is consumed
    and loaded into a fresh sampler continues with the next unseen index. The state is
    per rank (ranks with different shard sizes cross epochs at different times): save every
    rank's state (e.g. `attractor.train.distributed.all_gather_object`) and load each its own.
    `epoch` is the sampler's: a trainer should read it rather than keep its own count.
    """

    def __init__(
        self,
        n: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ):
        if n < 1:
            raise ValueError(f"ShardedSampler: need at least one example, got n={n}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"ShardedSampler: need 0 <= rank < world_size, got rank={rank}, "
                f"world_size={world_size}"
            )
        self.n = n
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._cached: tuple[int, Tensor] | None = None

    # -- the shard of one epoch ------------------------------------------------

    def permutation(self, epoch: int) -> Tensor:
        """p_epoch: the permutation of range(n) every rank shares in `epoch`, (n,)."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=g)

    def shard(self, epoch: int) -> Tensor:
        """This rank's indices in `epoch`: p_epoch[rank::world_size], (len(self),)."""
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self.permutation(epoch)[self.rank :: self.world_size])
        return self._cached[1]

    def __len__(self) -> int:
        """Indices this rank gets per epoch: ceil((n - rank) / world_size)."""
        return (self.n - self.rank + self.world_size - 1) // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Move to `epoch` from its start; the current epoch keeps its position (resume)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    # -- iteration --------------------------------------------------------------

    def _next_epoch_if_done(self) -> None:
        if self.position >= len(self):
            self.epoch += 1
            self.position = 0

    def __iter__(self) -> Iterator[int]:
        """The rest of this rank's current epoch (the next epoch if it is used up)."""
        self._next_epoch_if_done()
        shard = self.shard(self.epoch)
        while self.position < len(shard):
            index = int(shard[self.position])
            self.position += 1
            yield index

    def batches(self, batch_size: int) -> Iterator[list[int]]:
        """Batches of `batch_size` indices forever, running on into the next epoch.

        A batch may straddle an epoch boundary (the tail of one epoch, the head of the next),
        so no index is dropped and every batch is full. The state is advanced before each
        batch is yielded, so `state_dict()` after `next()` points just past that batch.
        """
        if batch_size < 1:
            raise ValueError(f"ShardedSampler.batches: batch_size must be >= 1, got {batch_size}")
        if len(self) == 0:
            raise ValueError(
                f"ShardedSampler.batches: rank {self.rank} has no examples "
                f"(n={self.n} < world_size={self.world_size}); use fewer ranks or more data"
            )
        while True:
            batch: list[int] = []
            while len(batch) < batch_size:
                self._next_epoch_if_done()
                shard = self.shard(self.epoch)
                take = shard[self.position : self.position + batch_size - len(batch)]
                batch.extend(take.tolist())
                self.position += len(take)
            yield batch

    # -- checkpointing ------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """(epoch, position) plus what they are relative to (n, seed, shuffle, rank, world)."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "n": self.n,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`; it must come from a sampler with the same n, seed and shard."""
        for key in ("n", "seed", "shuffle", "rank", "world_size"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"ShardedSampler.load_state_dict: state has {key}={state[key]!r} but this "
                    f"sampler has {key}={getattr(self, key)!r}; a position only means something "
                    "for the same data, seed and shard (load each rank's own state)"
                )
        if not 0 <= state["position"] <= len(self):
            raise ValueError(
                f"ShardedSampler.load_state_dict: position {state['position']} outside "
                f"[0, {len(self)}]"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
