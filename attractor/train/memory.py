"""Measuring the memory of a training step: what autograd saves, and the process's RSS.

`SavedTensors` counts the bytes autograd saves for backward while it is active (the
activation memory docs/method.md section 2.3 says must not grow with the solver depth);
`peak_rss_bytes` and `current_rss_bytes` read the process's resident memory.
`benchmarks/memory_vs_depth.py` uses both (paper Figure 5).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import torch
from torch import Tensor

StorageKey = tuple[str, int]


def _storage_key(t: Tensor) -> StorageKey:
    """The identity of t's storage: its device and its address there."""
    return str(t.device), t.untyped_storage().data_ptr()


class SavedTensors:
    """Count the tensors autograd saves for backward inside a ``with`` block.

    Every tensor an autograd node saves passes through a `saved_tensors_hooks` pack hook;
    each distinct storage counts once, at its full ``nbytes`` (a saved view counts the
    storage it views, and a storage saved by several nodes counts once). Storages of the
    tensors in ``exclude`` (a model's parameters, say) are tallied apart, in
    ``excluded_bytes``, and not in ``bytes``::

        with SavedTensors(exclude=model.parameters()) as saved:
            loss = model(ids, labels=labels).loss
        saved.bytes, saved.excluded_bytes, saved.storages

    The hook holds each saved storage until the block ends, so a storage is counted even
    when its graph is freed before then (and cannot be mistaken for a later storage at the
    same address); the count is of everything saved in the block, which equals the memory
    saved for backward when, as in a training forward, the whole graph is still alive.
    """

    def __init__(self, exclude: Iterable[Tensor] = ()) -> None:
        self._exclude = {_storage_key(t) for t in exclude}
        self._held: dict[StorageKey, torch.UntypedStorage] = {}
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None
        self.bytes = 0  # distinct saved storages not in `exclude`
        self.excluded_bytes = 0  # distinct saved storages of `exclude`
        self.storages = 0  # number of distinct saved storages not in `exclude`

    def _pack(self, t: Tensor) -> Tensor:
        self._held.setdefault(_storage_key(t), t.untyped_storage())
        return t

    def __enter__(self) -> SavedTensors:
        self._held.clear()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._hooks is not None
        self._hooks.__exit__(exc_type, exc, tb)
        self._hooks = None
        kept = [s.nbytes() for k, s in self._held.items() if k not in self._exclude]
        self.bytes, self.storages = sum(kept), len(kept)
        self.excluded_bytes = sum(s.nbytes() for k, s in self._held.items() if k in self._exclude)
        self._held.clear()


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far, in bytes (`getrusage` ru_maxrss)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def current_rss_bytes() -> int | None:
    """The process's resident set size now, in bytes (Linux /proc/self/statm; else None)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return None
    return pages * resource.getpagesize()
