"""Keys and values of one attention layer, kept for generation."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Keys and values of one attention layer, (B, Hkv, S, Dh) each, grown by concatenation.

    A model holds one per layer: `caches = [KVCache() for _ in blocks]`. `crop(n)` forgets
    everything after the first n positions (to re-solve or reject speculated tokens).
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add k, v (B, Hkv, T, Dh) after the cached positions; return all keys and values."""
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat((self.k, k), dim=2)  # (B, Hkv, S, Dh)
            self.v = torch.cat((self.v, v), dim=2)
        return self.k, self.v

    def crop(self, length: int) -> None:
        """Keep the first `length` positions."""
        if not 0 <= length <= self.length:
            raise ValueError(f"KVCache.crop: length must be in [0, {self.length}], got {length}")
        if length == 0:
            self.reset()
        else:
            self.k, self.v = self.k[:, :, :length], self.v[:, :, :length]

    def reset(self) -> None:
        self.k = self.v = None

    def select(self, rows: Tensor) -> KVCache:
        """A new cache holding the batch rows `rows` (a copy: appends do not reach self)."""
        sub = KVCache()
        if self.k is not None:
            sub.k, sub.v = self.k[rows], self.v[rows]
        return sub
