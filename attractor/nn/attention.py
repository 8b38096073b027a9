"""Multi-head attention with grouped key/value heads, QK-norm and rotary positions.

Shape letters: B batch, T sequence length, C model width, H query heads, Hkv key/value heads,
Dh head width, S key length (cached plus new)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attractor.nn.kv_cache import KVCache
from attractor.nn.norm import RMSNorm, rms_norm
from attractor.nn.rotary import RopeLayout, Rotary, apply_rotary

# "learned": an RMSNorm with a weight over Dh, before rotary (ours); "weightless":
# F.rms_norm over Dh with no weight and eps = float32 eps, after rotary (the paper's code);
# "none": no QK-norm.
QKNorm = Literal["learned", "weightless", "none"]

# `enable_gqa` arrived in scaled_dot_product_attention with torch 2.5; on 2.4 we repeat k, v.
_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


class Attention(nn.Module):
    """Multi-head attention with grouped KV heads, QK-norm and rotary positions.

    y = Wo softmax(R(n(q)) R(n(k))^T / sqrt(Dh) + M) v, with q = Wq x, k = Wk x,
    v = Wv x + value_embed, n an RMSNorm over Dh (QK-norm), R the rotary rotation and M the
    causal mask. Query head h reads key/value head h // (H / Hkv). With
    qk_norm="weightless" the norm has no weight and runs after R: n(R(q)) n(R(k))^T (a
    rotation keeps the norm, so only rounding tells the two orders apart).

    With a `cache`, the new tokens take positions cache.length .. cache.length+T-1, their k, v
    are appended to the cache, and they attend to every cached key and causally among
    themselves.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        causal: bool = True,
        qk_norm: QKNorm = "learned",
        rotary: bool = True,
        bias: bool = False,
        max_seq_len: int = 2048,
        rope_base: float = 10000.0,
        rope_layout: RopeLayout = "half",
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if dim % n_heads:
            raise ValueError(f"Attention: dim {dim} is not divisible by n_heads {n_heads}")
        if n_heads % n_kv_heads:
            raise ValueError(
                f"Attention: n_heads {n_heads} is not divisible by n_kv_heads {n_kv_heads}"
            )
        self.n_heads, self.n_kv_heads, self.causal = n_heads, n_kv_heads, causal
        self.head_dim = dim // n_heads
        kv_dim = n_kv_heads * self.head_dim
        self.wq = nn.Linear(dim, dim, bias=bias)
        self.wk = nn.Linear(dim, kv_dim, bias=bias)
        self.wv = nn.Linear(dim, kv_dim, bias=bias)
        self.wo = nn.Linear(dim, dim, bias=bias)
        if qk_norm not in ("learned", "weightless", "none"):
            raise ValueError(
                f"Attention: qk_norm must be learned, weightless or none, got {qk_norm!r}"
            )
        if rope_layout not in ("half", "interleaved"):
            raise ValueError(
                f"Attention: rope_layout must be half or interleaved, got {rope_layout!r}"
            )
        learned = qk_norm == "learned"
        self.q_norm = RMSNorm(self.head_dim, norm_eps) if learned else None
        self.k_norm = RMSNorm(self.head_dim, norm_eps) if learned else None
        self.weightless_qk_norm = qk_norm == "weightless"
        self.rotary = Rotary(self.head_dim, max_seq_len, rope_base) if rotary else None
        self.rope_layout = rope_layout

    def forward(
        self, x: Tensor, cache: KVCache | None = None, value_embed: Tensor | None = None
    ) -> Tensor:
        """x (B, T, C), value_embed (B, T, Hkv*Dh) or None -> (B, T, C).

        Rotary and the norms run in the (B, T, H, Dh) layout and attention gets transposed
        views of it: its output then comes back in that memory layout too (CPU flash
        attention follows the query's strides) and reaches Wo as a view. From contiguous
        (B, H, T, Dh) queries it came back (B, H, T, Dh)-contiguous, and the reshape for Wo
        was a copy that Wo saved beside attention's own saved output."""
        B, T, C = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, H, Dh)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, Hkv, Dh)
        v = self.wv(x)  # (B, T, Hkv*Dh)
        if value_embed is not None:
            v = v + value_embed
        v = v.view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, Hkv, Dh)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        start = 0 if cache is None else cache.length
        if self.rotary is not None:
            cos, sin = self.rotary(T, start)
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (T, 1, Dh/2): over the heads
            q = apply_rotary(q, cos, sin, self.rope_layout)
            k = apply_rotary(k, cos, sin, self.rope_layout)
        if self.weightless_qk_norm:
            q, k = _weightless_norm(q), _weightless_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|Hkv, T, Dh)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, Hkv, S, Dh)
        y = self._attend(q, k, v, start).transpose(1, 2).reshape(B, T, C)
        return self.wo(y)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, start: int) -> Tensor:
        """Scaled dot-product attention of q (B, H, T, Dh) at positions start.. over k, v."""
        T, S = q.size(2), k.size(2)
        mask, is_causal = None, False
        if self.causal and T > 1:
            if start == 0:
                is_causal = True
            else:  # query i sits at position start+i and sees keys 0 .. start+i
                mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=start)
        extra = {}
        if self.n_kv_heads != self.n_heads:
            if _SDPA_HAS_GQA:
                extra["enable_gqa"] = True
            else:
                group = self.n_heads // self.n_kv_heads
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, **extra)


def _weightless_norm(x: Tensor) -> Tensor:
    """x / sqrt(mean(x^2) + eps) over Dh, no weight, eps = float32 eps, computed in float32
    (`rms_norm`): the paper's QK-norm, `F.rms_norm(x, (Dh,))` with eps left to torch
    (float32 inputs)."""
    return rms_norm(x, None, torch.finfo(torch.float32).eps)
