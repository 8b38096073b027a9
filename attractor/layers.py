"""Transformer building blocks shared by every model in the package.

Read top to bottom: norm, rotary embeddings, KV cache, attention, MLPs, then the two blocks
(`Block`, the plain pre-norm block of the backbones, and `GatedBlock`, the attractor head's
block with per-channel gates, DESIGN.md section 2.1), and last `init_weights`.

Shape letters: B batch, T sequence length, C model width, H query heads, Hkv key/value heads,
Dh head width, S key length (cached plus new).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# `enable_gqa` arrived in scaled_dot_product_attention with torch 2.5; on 2.4 we repeat k, v.
_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)

# The largest g_init / g_max a gate can start at: sigmoid(rho) = 1 needs rho = +inf.
GATE_RATIO_MAX = 1.0 - 1e-3


# -----------------------------------------------------------------------------
# Small parts


class RMSNorm(nn.Module):
    """Root-mean-square norm: y = x / sqrt(mean(x^2) + eps) * w (Zhang & Sennrich, 2019).

    Computed in float32 and cast back to the input dtype. `affine=False` drops w.
    """

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.float()
        return F.rms_norm(x.float(), (self.dim,), w, self.eps).to(x.dtype)


class Rotary(nn.Module):
    """Rotary position embedding tables (RoFormer, Su et al. 2021).

    Position p rotates the pair (x_i, x_{i+Dh/2}) by the angle p * theta_i, with
    theta_i = base^(-2i/Dh). `forward(T, start)` returns cos and sin, each (T, Dh/2), for
    positions start .. start+T-1. The tables are non-persistent buffers, regrown on demand.
    """

    def __init__(self, head_dim: int, max_seq_len: int = 2048, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"Rotary: head_dim must be even, got {head_dim}")
        self.head_dim, self.base = head_dim, base
        self._build(max_seq_len, device=None)

    def _build(self, n: int, device: torch.device | None) -> None:
        i = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
        inv_freq = self.base ** (-i / self.head_dim)  # (Dh/2,)
        t = torch.arange(n, dtype=torch.float32, device=device)
        angles = torch.outer(t, inv_freq)  # (n, Dh/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, T: int, start: int = 0) -> tuple[Tensor, Tensor]:
        end = start + T
        if end > self.cos.size(0):
            self._build(max(end, 2 * self.cos.size(0)), device=self.cos.device)
        return self.cos[start:end], self.sin[start:end]  # (T, Dh/2) each


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, H, T, Dh) by the tables of `Rotary`: with x1, x2 the two halves of Dh,
    y = [x1 cos - x2 sin, x1 sin + x2 cos]."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]  # (B, H, T, Dh/2)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (T, Dh/2), broadcast over B, H
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


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


class Attention(nn.Module):
    """Multi-head attention with grouped KV heads, QK-norm and rotary positions.

    y = Wo softmax(R(n(q)) R(n(k))^T / sqrt(Dh) + M) v, with q = Wq x, k = Wk x,
    v = Wv x + value_embed, n an RMSNorm over Dh (QK-norm), R the rotary rotation and M the
    causal mask. Query head h reads key/value head h // (H / Hkv).

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
        qk_norm: bool = True,
        rotary: bool = True,
        bias: bool = False,
        max_seq_len: int = 2048,
        rope_base: float = 10000.0,
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
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.rotary = Rotary(self.head_dim, max_seq_len, rope_base) if rotary else None

    def forward(
        self, x: Tensor, cache: KVCache | None = None, value_embed: Tensor | None = None
    ) -> Tensor:
        """x (B, T, C), value_embed (B, T, Hkv*Dh) or None -> (B, T, C)."""
        B, T, C = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, H, Dh)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, Hkv, Dh)
        v = self.wv(x)  # (B, T, Hkv*Dh)
        if value_embed is not None:
            v = v + value_embed
        v = v.view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, Hkv, Dh)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|Hkv, T, Dh)
        start = 0 if cache is None else cache.length
        if self.rotary is not None:
            cos, sin = self.rotary(T, start)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, Hkv, S, Dh)
        y = self._attend(q, k, v, start)  # (B, H, T, Dh)
        return self.wo(y.transpose(1, 2).reshape(B, T, C))

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


class ReLU2MLP(nn.Module):
    """Squared-ReLU MLP (So et al. 2021, Primer): y = W2 relu(W1 x)^2. No biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.relu(self.w1(x)).square())  # (B, T, C)


class SwiGLU(nn.Module):
    """Gated MLP (Shazeer 2020): y = W2 (silu(W1 x) * W3 x). No biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, T, C)


MLPS = {"relu2": ReLU2MLP, "swiglu": SwiGLU}


# -----------------------------------------------------------------------------
# Blocks


class Block(nn.Module):
    """Pre-norm transformer block: h = x + Attn(norm1 x); out = h + MLP(norm2 h).

    `attn_branch` and `mlp_branch` return the two residual branches on their own.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_hidden: int,
        n_kv_heads: int | None = None,
        causal: bool = True,
        mlp: str = "relu2",
        qk_norm: bool = True,
        max_seq_len: int = 2048,
    ):
        super().__init__()
        if mlp not in MLPS:
            raise ValueError(f"Block: mlp must be one of {sorted(MLPS)}, got {mlp!r}")
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(
            dim, n_heads, n_kv_heads, causal=causal, qk_norm=qk_norm, max_seq_len=max_seq_len
        )
        self.norm2 = RMSNorm(dim)
        self.mlp = MLPS[mlp](dim, mlp_hidden)

    def attn_branch(
        self, x: Tensor, cache: KVCache | None = None, value_embed: Tensor | None = None
    ) -> Tensor:
        """Attn(norm1 x), (B, T, C)."""
        return self.attn(self.norm1(x), cache, value_embed)

    def mlp_branch(self, h: Tensor) -> Tensor:
        """MLP(norm2 h), (B, T, C)."""
        return self.mlp(self.norm2(h))

    def forward(
        self, x: Tensor, cache: KVCache | None = None, value_embed: Tensor | None = None
    ) -> Tensor:
        h = x + self.attn_branch(x, cache, value_embed)  # (B, T, C)
        return h + self.mlp_branch(h)


class GatedBlock(Block):
    """The attractor head's block (DESIGN.md 2.1): each branch is gated per channel,

    h = x + g_a * Attn(norm1 x);  out = h + g_m * MLP(norm2 h);  g = g_max * sigmoid(rho),

    with rho of shape (C,) initialised to logit(g_init / g_max) so that g = g_init. Since
    g = g_max needs rho = +inf, the starting ratio is clamped to GATE_RATIO_MAX = 1 - 1e-3:
    g_init == g_max starts at g = 0.999 * g_max. Output projections keep the normal (non-zero)
    initialisation: a zero branch would make the head a constant map.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_hidden: int,
        n_kv_heads: int | None = None,
        causal: bool = True,
        mlp: str = "relu2",
        qk_norm: bool = True,
        max_seq_len: int = 2048,
        gate_init: float = 0.75,
        gate_max: float = 0.75,
    ):
        super().__init__(dim, n_heads, mlp_hidden, n_kv_heads, causal, mlp, qk_norm, max_seq_len)
        if not 0.0 < gate_init <= gate_max:
            raise ValueError(
                f"GatedBlock: need 0 < gate_init <= gate_max, got {gate_init}, {gate_max}"
            )
        self.gate_init, self.gate_max = gate_init, gate_max
        self.rho_attn = nn.Parameter(torch.empty(dim))
        self.rho_mlp = nn.Parameter(torch.empty(dim))
        self.reset_gates()

    def reset_gates(self) -> None:
        """Set rho = logit(min(g_init / g_max, GATE_RATIO_MAX))."""
        r = min(self.gate_init / self.gate_max, GATE_RATIO_MAX)
        with torch.no_grad():
            self.rho_attn.fill_(math.log(r / (1.0 - r)))
            self.rho_mlp.fill_(math.log(r / (1.0 - r)))

    def gates(self) -> tuple[Tensor, Tensor]:
        """(g_a, g_m), each (C,): g = g_max * sigmoid(rho)."""
        return self.gate_max * self.rho_attn.sigmoid(), self.gate_max * self.rho_mlp.sigmoid()

    def forward(
        self, x: Tensor, cache: KVCache | None = None, value_embed: Tensor | None = None
    ) -> Tensor:
        g_a, g_m = self.gates()
        h = x + g_a.to(x.dtype) * self.attn_branch(x, cache, value_embed)  # (B, T, C)
        return h + g_m.to(x.dtype) * self.mlp_branch(h)


# -----------------------------------------------------------------------------
# Initialisation


def init_weights(module: nn.Module, std: float = 0.02, out_std: float | None = None) -> None:
    """Initialise every submodule: Linear and Embedding weights ~ N(0, std^2), biases 0,
    RMSNorm weights 1; output projections (Attention.wo, MLP w2) ~ N(0, out_std^2), e.g.
    out_std = std / sqrt(2 * n_layers) (GPT-2). out_std defaults to std. Gates are untouched."""
    out_std = std if out_std is None else out_std
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, RMSNorm) and m.weight is not None:
            nn.init.ones_(m.weight)
    for m in module.modules():  # second pass: parents come before their children above
        if isinstance(m, Attention):
            nn.init.normal_(m.wo.weight, 0.0, out_std)
        elif isinstance(m, (ReLU2MLP, SwiGLU)):
            nn.init.normal_(m.w2.weight, 0.0, out_std)
