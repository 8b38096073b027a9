import itertools

import pytest
import torch

from attractor.data.sampler import ShardedSampler

NS = [10, 11, 97, 1000]
WORLDS = [1, 2, 3, 8]


def shards(n: int, world: int, epoch: int, seed: int = 0) -> list[list[int]]:
    out = []
    for rank in range(world):
        s = ShardedSampler(n, rank=rank, world_size=world, seed=seed)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("world", WORLDS)
def test_shards_partition_every_epoch(n, world):
    for epoch in range(3):
        parts = shards(n, world, epoch)
        for a, b in itertools.combinations(parts, 2):
            assert not set(a) & set(b)
        union = [i for part in parts for i in part]
        assert sorted(union) == list(range(n))  # every index exactly once
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= (1 if n % world else 0)
        for rank, part in enumerate(parts):
            assert len(part) == len(ShardedSampler(n, rank=rank, world_size=world))


@pytest.mark.parametrize("n", NS)
def test_permutation_differs_between_epochs_and_repeats_for_same_seed(n):
    a, b = ShardedSampler(n, seed=5), ShardedSampler(n, seed=5)
    perms = [a.permutation(e).tolist() for e in range(3)]
    assert perms == [b.permutation(e).tolist() for e in range(3)]
    assert perms[0] != perms[1] and perms[1] != perms[2]
    assert perms[0] != ShardedSampler(n, seed=6).permutation(0).tolist()


def test_iter_without_set_epoch_moves_to_the_next_epoch():
    s = ShardedSampler(20, rank=1, world_size=3)
    first, second = list(s), list(s)
    assert first == s.shard(0).tolist() and second == s.shard(1).tolist()
    assert s.epoch == 1


def test_set_epoch_keeps_position_within_the_same_epoch():
    s = ShardedSampler(20)
    it = iter(s)
    head = [next(it) for _ in range(5)]
    s.set_epoch(0)  # a resumed trainer re-announcing the current epoch
    assert head + list(s) == s.shard(0).tolist()
    s.set_epoch(4)
    assert (s.epoch, s.position) == (4, 0)


@pytest.mark.parametrize("n,world,batch", [(11, 2, 4), (97, 3, 7), (10, 8, 3), (1000, 8, 32)])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_resume_matches_uninterrupted_run(n, world, batch, k):
    for rank in range(world):
        ref = ShardedSampler(n, rank=rank, world_size=world, seed=3).batches(batch)
        expected = [next(ref) for _ in range(k + 8)]

        run = ShardedSampler(n, rank=rank, world_size=world, seed=3)
        gen = run.batches(batch)
        seen = [next(gen) for _ in range(k)]
        state = run.state_dict()

        fresh = ShardedSampler(n, rank=rank, world_size=world, seed=3)
        fresh.load_state_dict(state)
        gen2 = fresh.batches(batch)
        assert seen + [next(gen2) for _ in range(8)] == expected


def test_resume_across_epoch_boundary():
    n, batch = 11, 4  # rank 0 of 2 holds 6 per epoch: batch 2 straddles epochs 0 and 1
    s = ShardedSampler(n, rank=0, world_size=2)
    gen = s.batches(batch)
    first = next(gen)
    fresh = ShardedSampler(n, rank=0, world_size=2)
    fresh.load_state_dict(s.state_dict())
    straddling = next(fresh.batches(batch))
    assert first + straddling == s.shard(0).tolist() + s.shard(1).tolist()[:2]
    assert (fresh.epoch, fresh.position) == (1, 2)


@pytest.mark.parametrize("n", [11, 97])
@pytest.mark.parametrize("world", [2, 3, 8])
def test_batches_cover_each_epoch_exactly_once(n, world):
    batch = 5
    steps = 4 * n // (world * batch) + 1  # same number of steps on every rank
    per_rank = []
    for rank in range(world):
        gen = ShardedSampler(n, rank=rank, world_size=world).batches(batch)
        flat = [i for _ in range(steps) for i in next(gen)]
        size = len(ShardedSampler(n, rank=rank, world_size=world))
        per_rank.append([flat[e * size : (e + 1) * size] for e in range(2)])
    for epoch in range(2):
        assert sorted(i for r in per_rank for i in r[epoch]) == list(range(n))


def test_load_state_dict_rejects_another_rank_or_world():
    state = ShardedSampler(97, rank=0, world_size=2).state_dict()
    with pytest.raises(ValueError, match="rank=0"):
        ShardedSampler(97, rank=1, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="world_size=2"):
        ShardedSampler(97, rank=0, world_size=4).load_state_dict(state)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        ShardedSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no examples"):
        next(ShardedSampler(2, rank=2, world_size=3).batches(1))
    with pytest.raises(ValueError, match="batch_size"):
        next(ShardedSampler(10).batches(0))


# -----------------------------------------------------------------------------
# The bug we guard against


def buggy_shard(n: int, rank: int, world: int, batch: int, epoch: int) -> list[int]:
    """A sharding pattern of the kind found in research code: every rank walks the same
    permutation batch by batch, offsetting by `rank * batch`, but steps by one batch instead
    of by `world * batch`; and it stops after its share of n // world samples."""
    g = torch.Generator().manual_seed(epoch)
    perm = torch.randperm(n, generator=g).tolist()
    steps = (n // world) // batch
    out = []
    for step in range(steps):
        start = (step * batch + rank * batch) % n  # bug: should be (step * world + rank) * batch
        out.extend(perm[start : start + batch])
    return out


def coverage(parts: list[list[int]], n: int) -> float:
    return len({i for p in parts for i in p}) / n


@pytest.mark.parametrize("world", [2, 3, 8])
def test_buggy_sharding_leaves_samples_unseen_ours_does_not(world):
    n, batch = 1000, 10
    buggy = [buggy_shard(n, r, world, batch, epoch=0) for r in range(world)]
    ours = shards(n, world, epoch=0)
    assert coverage(ours, n) == 1.0
    assert coverage(buggy, n) < 0.9  # overlapping windows: ranks re-read each other's data
    assert sum(map(len, buggy)) <= n  # same budget of samples, yet whole regions never seen
