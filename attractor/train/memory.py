"""Measuring the memory of a training step: what autograd saves, and the process's RSS.

`SavedTensors` counts the bytes autograd saves for backward while it is active (the
activation memory docs/method.md section 2.3 says must not grow with the solver depth),
and `SavedTensors.by_op` splits them by the autograd node that saved them;
`peak_rss_bytes` and `current_rss_bytes` read the process's resident memory.
`benchmarks/memory_vs_depth.py` uses both (paper Figure 5), `benchmarks/saved_bytes_per_op.py`
the split.
"""

from __future__ import annotations

import resource
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import torch
from torch import Tensor

StorageKey = tuple[str, int]

# by_op's name for saved storages that no node reachable from the given outputs holds
UNREACHED = "(not reachable from the outputs)"


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
    ``saved.by_op(loss)``, after the block and before backward, splits ``bytes`` by the
    autograd node that saved each storage.
    """

    def __init__(self, exclude: Iterable[Tensor] = ()) -> None:
        self._exclude = {_storage_key(t) for t in exclude}
        self._held: dict[StorageKey, torch.UntypedStorage] = {}
        self._sizes: dict[StorageKey, int] = {}  # the counted storages, kept for by_op
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
        self._sizes = {k: s.nbytes() for k, s in self._held.items() if k not in self._exclude}
        self.bytes, self.storages = sum(self._sizes.values()), len(self._sizes)
        self.excluded_bytes = sum(s.nbytes() for k, s in self._held.items() if k in self._exclude)
        self._held.clear()

    def by_op(self, *outputs: Tensor) -> dict[str, int]:
        """``bytes`` split by the type of the autograd node that saved each storage (its
        class name, e.g. ``MmBackward0``), largest first; the values sum to ``bytes``.

        Walks the graph of `outputs` and reads what each node saved (a built-in node's
        ``_saved_*`` fields, a custom Function's ``saved_tensors``). A storage saved by
        several nodes counts once, for the one of them the forward made first (the lowest
        sequence number): relu's output, saved by relu and by the next matmul, counts for
        relu; a norm's output that only the next matmul saves counts for the matmul.
        Counted storages no reachable node holds (a graph freed in the block) go under
        `UNREACHED`. Call it after the block and before backward frees the graph.
        """
        owner: dict[StorageKey, tuple[int, str]] = {}
        for node in _graph_nodes(outputs):
            seq, name = node._sequence_nr(), type(node).__name__
            for t in _saved_by(node):
                key = _storage_key(t)
                if key in self._sizes and (key not in owner or seq < owner[key][0]):
                    owner[key] = (seq, name)
        split: Counter[str] = Counter()
        for key, size in self._sizes.items():
            split[owner[key][1] if key in owner else UNREACHED] += size
        return dict(split.most_common())


def _graph_nodes(outputs: Iterable[Tensor]) -> Iterator[torch.autograd.graph.Node]:
    """Every autograd node reachable from the outputs' grad_fn, each once."""
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    seen: set[torch.autograd.graph.Node] = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(next_node for next_node, _ in node.next_functions)


def _saved_by(node: torch.autograd.graph.Node) -> list[Tensor]:
    """The tensors a node saved for its backward."""
    names = [a for a in dir(node) if a.startswith("_saved_")]
    if hasattr(node, "saved_tensors"):  # a custom autograd.Function's node
        names.append("saved_tensors")
    found: list[Tensor] = []
    for name in names:
        value = getattr(node, name)
        items = value if isinstance(value, (tuple, list)) else (value,)
        found.extend(t for t in items if isinstance(t, Tensor))
    return found


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
