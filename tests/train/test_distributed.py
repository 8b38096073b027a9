import os

import pytest
import torch
from spawn import run_processes
from torch import nn

from attractor.nn import Block
from attractor.train.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    barrier,
    broadcast_object,
    setup_distributed,
    teardown_distributed,
    unwrap,
    wrap_model,
)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


class TinyBlocks(nn.Module):
    """Two transformer blocks and a head: FSDP shards each block, then the root."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList([Block(4, 2, 8, max_seq_len=8) for _ in range(2)])
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)  # (B, T, 4)
        return self.head(x)  # (B, T, 2)


def batch(seq: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shape = (6, 3) if seq else (6,)
    return torch.randn(*shape, 4, generator=g), torch.randn(*shape, 2, generator=g)


def sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def test_single_process_without_torchrun(no_torchrun):
    info = setup_distributed(device="cpu")
    assert (info.rank, info.world_size, info.local_rank) == (0, 1, 0)
    assert info.is_main and info.device == torch.device("cpu")
    assert not torch.distributed.is_initialized()
    teardown_distributed()  # nothing to tear down: no error


def test_single_process_helpers_are_no_ops(no_torchrun):
    t = torch.tensor([1.0, 3.0])
    assert torch.equal(all_reduce_mean(t), t)
    barrier()
    assert broadcast_object({"a": 1}) == {"a": 1}
    assert all_gather_object(7) == [7]


def test_wrap_none_is_identity_and_unknown_strategy_raises(no_torchrun):
    info = setup_distributed(device="cpu")
    model = tiny_net()
    assert wrap_model(model, "none", info) is model
    assert unwrap(model) is model
    with pytest.raises(ValueError, match=r"\['none', 'ddp', 'fsdp'\]"):
        wrap_model(model, "zero3", info)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_parallel_strategy_without_process_group_says_use_torchrun(no_torchrun, strategy):
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="torchrun"):
        wrap_model(tiny_net(), strategy, info)


def test_bad_rank_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2"):
        setup_distributed(device="cpu")


# -----------------------------------------------------------------------------
# Two real processes over gloo


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = setup_distributed(device="cpu", init_method=f"file://{init_file}")
    # no try/finally: a failing rank exits without teardown's barrier, so its peer fails too
    assert (info.rank, info.world_size, info.is_main) == (rank, world, rank == 0)
    model = wrap_model(tiny_net(), "ddp", info)
    assert isinstance(unwrap(model), nn.Sequential)
    x, y = batch()
    half = x.shape[0] // world
    part = slice(rank * half, (rank + 1) * half)
    sgd_step(model, x[part], y[part])  # DDP averages the two halves' gradients

    fsdp = wrap_model(TinyBlocks(), "fsdp", info)
    assert unwrap(fsdp) is fsdp  # FSDP2 shards in place
    x, y = batch(seq=True)
    sgd_step(fsdp, x[part], y[part])
    fsdp_params = [p.full_tensor() for p in fsdp.parameters()]  # all-gather the shards

    mean = all_reduce_mean(torch.tensor([float(rank), 10.0 * rank]))
    picked = broadcast_object({"from": rank} if rank == 0 else None)
    gathered = all_gather_object(rank * 100)
    barrier()
    torch.save(
        {
            "params": [p.detach().clone() for p in unwrap(model).parameters()],
            "fsdp_params": fsdp_params,
            "mean": mean,
            "picked": picked,
            "gathered": gathered,
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    teardown_distributed()


def test_ddp_and_fsdp_two_processes_match_single_process_step(tmp_path):
    world = 2
    run_processes(_ddp_worker, (world, str(tmp_path / "init"), str(tmp_path)), nprocs=world)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]

    reference = tiny_net()
    sgd_step(reference, *batch())  # full batch: mean loss over 6 = mean of the halves' means
    for got in results:
        for p, q in zip(got["params"], reference.parameters(), strict=True):
            torch.testing.assert_close(p, q.detach(), rtol=1e-6, atol=1e-7)
    for a, b in zip(results[0]["params"], results[1]["params"], strict=True):
        assert torch.equal(a, b)

    reference = TinyBlocks()
    sgd_step(reference, *batch(seq=True))
    for got in results:
        for p, q in zip(got["fsdp_params"], reference.parameters(), strict=True):
            torch.testing.assert_close(p, q.detach(), rtol=1e-5, atol=1e-6)

    for got in results:
        torch.testing.assert_close(got["mean"], torch.tensor([0.5, 5.0]))
        assert got["picked"] == {"from": 0}
        assert got["gathered"] == [0, 100]
