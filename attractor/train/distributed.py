"""Process groups and model wrapping for `torchrun --nproc_per_node=N -m attractor train`.

One process per device. `setup_distributed` reads the environment torchrun sets (RANK,
WORLD_SIZE, LOCAL_RANK), `wrap_model` applies the data-parallel strategy ("none", "ddp" or
"fsdp"), and the small collective helpers below are no-ops in a single process, so the same
trainer code runs with and without torchrun.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

try:  # FSDP2; public in torch >= 2.6
    from torch.distributed.fsdp import fully_shard
except ImportError:  # pragma: no cover - older torch
    from torch.distributed._composable.fsdp import fully_shard

from attractor.nn import Block

STRATEGIES = ("none", "ddp", "fsdp")


@dataclass
class DistInfo:
    """Where this process sits: its global rank, the number of processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and writes checkpoints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"setup_distributed: {name} must be an integer, got {value!r}") from None


def _pick_device(device: str | None, local_rank: int, distributed: bool) -> torch.device:
    """`device` if given ("cuda" means this process's GPU), else cuda:local_rank or cpu."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and distributed:
        dev = torch.device("cuda", local_rank)
    return dev


def setup_distributed(device: str | None = None, init_method: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1), else run as one process.

    The backend is nccl when the device is CUDA, gloo otherwise. `init_method` defaults to
    "env://" (MASTER_ADDR/MASTER_PORT, as torchrun sets them); tests pass "file://...".
    An already initialised default group is reused, not initialised twice.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise ValueError(f"setup_distributed: RANK={rank} outside [0, WORLD_SIZE={world_size})")
    distributed = world_size > 1
    dev = _pick_device(device, local_rank, distributed)
    if not distributed:
        return DistInfo(rank=0, world_size=1, local_rank=0, device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            init_method=init_method or "env://",
            rank=rank,
            world_size=world_size,
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def teardown_distributed() -> None:
    """Destroy the default process group if one exists; call it once a run has succeeded,
    not in a `finally` that also runs when one rank fails.

    A barrier first: gloo's worker thread releases finished collectives (which needs the
    GIL) after the fact, and a process group torn down while that is pending can deadlock
    when DDP's reducer frees it at exit (seen with all_gather_object before teardown). That
    barrier is why a failing rank must not come here: its peers are waiting in another
    collective, which gloo matches with the barrier, and every rank hangs until the
    process group's timeout (30 minutes) instead of failing. A rank that fails should just
    exit; its peers' next collective then fails at once (the connection is closed).
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True when a default process group with more than one process exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# -----------------------------------------------------------------------------
# Model wrapping


def wrap_model(model: nn.Module, strategy: str, info: DistInfo) -> nn.Module:
    """Apply a data-parallel strategy: "none" (as is), "ddp" or "fsdp" (FSDP2).

    "fsdp" shards every `attractor.nn.Block` submodule as its own unit, then the root
    (which holds the embeddings and whatever is left). FSDP2 changes the model in place.
    "ddp" and "fsdp" need a process group: launch with torchrun. A single process asking for
    either is an error, not a silent fallback to "none", so a config never claims a strategy
    it did not get.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"wrap_model: strategy must be one of {list(STRATEGIES)}, got {strategy!r}"
        )
    if strategy == "none":
        return model
    if not dist.is_initialized():
        raise ValueError(
            f"wrap_model: strategy {strategy!r} needs a process group, but none is initialised "
            f"(world_size={info.world_size}); launch with `torchrun --nproc_per_node=N ...` "
            "(N > 1) or use strategy 'none' for a single process"
        )
    if strategy == "ddp":
        device_ids = [info.local_rank] if info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    return _fully_shard(model, info)


def _fully_shard(model: nn.Module, info: DistInfo) -> nn.Module:
    """FSDP2: one sharding unit per transformer block, then the root."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(info.device.type, (dist.get_world_size(),))
    blocks = [m for m in model.modules() if isinstance(m, Block) and m is not model]
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The module underneath DDP (`.module`) or torch.compile (`._orig_mod`); else `model`.

    FSDP2 shards in place, so an FSDP model is its own underlying module.
    """
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


# -----------------------------------------------------------------------------
# Collectives (no-ops in a single process)


def all_reduce_mean(t: Tensor) -> Tensor:
    """mean over ranks of `t`, as a new detached tensor (for metrics, not gradients)."""
    out = t.detach().clone()
    if not is_distributed():
        return out
    if not out.is_floating_point():
        out = out.float()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def barrier() -> None:
    """Wait until every rank gets here."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (pickled); `obj` itself in a single process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (e.g. per-rank sampler states for a checkpoint)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
