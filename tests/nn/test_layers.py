"""Tests for the layers of attractor/nn: each against a formula written out by hand here."""

import math

import pytest
import torch

from attractor.nn import (
    Attention,
    Block,
    GatedBlock,
    KVCache,
    PostNormBlock,
    ReLU2MLP,
    RMSNorm,
    Rotary,
    SwiGLU,
    apply_rotary,
    init_weights,
)
from attractor.nn import attention as attention_module
from attractor.nn.block import GATE_RATIO_MAX

DIM, HEADS, T = 32, 4, 10


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -----------------------------------------------------------------------------
# Independent references


def rms_ref(x, w, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_ref(x, start, base=10000.0):
    """Rotary as complex multiplication: (x1 + i x2) * exp(i p theta), in float64."""
    d = x.size(-1) // 2
    theta = base ** (-2.0 * torch.arange(d, dtype=torch.float64) / x.size(-1))
    pos = torch.arange(start, start + x.size(-2), dtype=torch.float64)
    angles = torch.outer(pos, theta)
    z = torch.complex(x[..., :d].double(), x[..., d:].double())
    z = z * torch.polar(torch.ones_like(angles), angles)
    return torch.cat((z.real, z.imag), dim=-1).to(x.dtype)


def attention_ref(attn, x, value_embed=None):
    """softmax(Q K^T / sqrt(d) + mask) V, written out from the module's own weights."""
    B, T, C = x.shape
    H, Hkv, Dh = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = (x @ attn.wq.weight.T).view(B, T, H, Dh)
    k = (x @ attn.wk.weight.T).view(B, T, Hkv, Dh)
    v = x @ attn.wv.weight.T
    if value_embed is not None:
        v = v + value_embed
    v = v.view(B, T, Hkv, Dh)
    if attn.q_norm is not None:
        q = rms_ref(q, attn.q_norm.weight, attn.q_norm.eps)
        k = rms_ref(k, attn.k_norm.weight, attn.k_norm.eps)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    q, k = rotate_ref(q, 0), rotate_ref(k, 0)
    kv_head = torch.arange(H) // (H // Hkv)  # query head h reads kv head h // group
    k, v = k[:, kv_head], v[:, kv_head]
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)  # (B, H, T, T)
    if attn.causal:
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    y = scores.softmax(-1) @ v  # (B, H, T, Dh)
    return y.transpose(1, 2).reshape(B, T, C) @ attn.wo.weight.T


def randomise_norms(module):
    """Non-unit norm weights, so a test notices a norm that is skipped."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, RMSNorm) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)


# -----------------------------------------------------------------------------
# Norm and rotary


def test_rmsnorm_matches_formula():
    norm = RMSNorm(DIM, eps=1e-5)
    randomise_norms(norm)
    x = torch.randn(2, 3, DIM) * 3
    torch.testing.assert_close(norm(x), rms_ref(x, norm.weight, 1e-5))
    torch.testing.assert_close(RMSNorm(DIM, affine=False)(x), rms_ref(x, 1.0, 1e-6))
    y = norm(x.bfloat16())
    assert y.dtype == torch.bfloat16
    ref = rms_ref(x.bfloat16().float(), norm.weight, 1e-5)
    torch.testing.assert_close(y.float(), ref, atol=2e-2, rtol=2e-2)


def test_rotary_matches_complex_rotation():
    rot = Rotary(8)
    x = torch.randn(2, 3, T, 8)
    cos, sin = rot(T, start=5)
    torch.testing.assert_close(apply_rotary(x, cos, sin), rotate_ref(x, 5))


def test_rotary_depends_only_on_relative_position():
    rot = Rotary(16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(m, n):
        qm = apply_rotary(q, *rot(1, start=m))
        kn = apply_rotary(k, *rot(1, start=n))
        return (qm * kn).sum()

    for m, n, s in [(0, 3, 7), (5, 2, 100), (9, 9, 31)]:
        torch.testing.assert_close(score(m + s, n + s), score(m, n), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(0, 3), score(0, 4))  # and it does depend on it


def test_rotary_start_offset_and_growth():
    rot = Rotary(8, max_seq_len=4)
    cos_full, sin_full = Rotary(8, max_seq_len=64)(40)
    cos, sin = rot(7, start=30)  # beyond the initial table: grows
    assert rot.cos.size(0) >= 37
    torch.testing.assert_close(cos, cos_full[30:37])
    torch.testing.assert_close(sin, sin_full[30:37])
    assert "cos" not in rot.state_dict()


# -----------------------------------------------------------------------------
# Attention


@pytest.mark.parametrize("n_kv_heads", [HEADS, 2, 1])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("gqa", [True, False])
def test_attention_matches_naive_reference(n_kv_heads, causal, gqa, monkeypatch):
    monkeypatch.setattr(attention_module, "_SDPA_HAS_GQA", gqa and attention_module._SDPA_HAS_GQA)
    attn = Attention(DIM, HEADS, n_kv_heads, causal=causal)
    randomise_norms(attn)
    x = torch.randn(2, T, DIM)
    torch.testing.assert_close(attn(x), attention_ref(attn, x), atol=1e-5, rtol=1e-5)


def test_attention_causal_future_does_not_leak():
    attn = Attention(DIM, HEADS, 2, causal=True)
    x = torch.randn(1, T, DIM)
    x2 = x.clone()
    x2[:, 6] += torch.randn(DIM)
    y, y2 = attn(x), attn(x2)
    torch.testing.assert_close(y[:, :6], y2[:, :6])
    assert not torch.allclose(y[:, 6], y2[:, 6])


def test_attention_bidirectional_sees_future():
    attn = Attention(DIM, HEADS, causal=False)
    x = torch.randn(1, T, DIM)
    x2 = x.clone()
    x2[:, -1] += torch.randn(DIM)
    assert not torch.allclose(attn(x)[:, 0], attn(x2)[:, 0], atol=1e-4)


@pytest.mark.parametrize("n_kv_heads", [HEADS, 2])
def test_attention_kv_cache_chunks_equal_full_sequence(n_kv_heads):
    attn = Attention(DIM, HEADS, n_kv_heads, qk_norm="learned")
    randomise_norms(attn)
    x = torch.randn(2, T, DIM)
    ve = torch.randn(2, T, n_kv_heads * attn.head_dim)
    full = attn(x, value_embed=ve)
    cache, outs, t = KVCache(), [], 0
    for n in (5, 1, 1, 3):
        outs.append(attn(x[:, t : t + n], cache=cache, value_embed=ve[:, t : t + n]))
        t += n
    assert cache.length == T
    assert cache.k.shape == (2, n_kv_heads, T, attn.head_dim)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)
    # crop back and redo the tail: same outputs again
    cache.crop(6)
    assert cache.length == 6
    redo = attn(x[:, 6:], cache=cache, value_embed=ve[:, 6:])
    torch.testing.assert_close(redo, full[:, 6:], atol=1e-5, rtol=1e-5)


def test_kv_cache_crop_bounds():
    cache = KVCache()
    cache.append(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="crop"):
        cache.crop(4)
    cache.crop(0)
    assert cache.length == 0 and cache.k is None


def test_value_embed_is_added_to_values():
    attn = Attention(DIM, HEADS, 2)
    x = torch.randn(2, T, DIM)
    ve = torch.randn(2, T, 2 * attn.head_dim)
    y = attn(x, value_embed=ve)
    assert not torch.allclose(y, attn(x), atol=1e-4)
    torch.testing.assert_close(y, attention_ref(attn, x, ve), atol=1e-5, rtol=1e-5)


def test_attention_rejects_bad_head_counts():
    with pytest.raises(ValueError, match="n_heads"):
        Attention(30, 4)
    with pytest.raises(ValueError, match="n_kv_heads"):
        Attention(DIM, 4, 3)


# -----------------------------------------------------------------------------
# MLPs and blocks


def test_mlps_match_formulas():
    x = torch.randn(2, 3, DIM)
    mlp = ReLU2MLP(DIM, 64)
    w1, w2 = mlp.w1.weight, mlp.w2.weight
    torch.testing.assert_close(mlp(x), torch.clamp(x @ w1.T, min=0) ** 2 @ w2.T)
    glu = SwiGLU(DIM, 64)
    w1, w2, w3 = glu.w1.weight, glu.w2.weight, glu.w3.weight
    a = x @ w1.T
    torch.testing.assert_close(glu(x), (a * torch.sigmoid(a) * (x @ w3.T)) @ w2.T)


@pytest.mark.parametrize("mlp", ["relu2", "swiglu"])
@pytest.mark.parametrize("causal", [True, False])
def test_block_forward_backward(mlp, causal):
    block = Block(DIM, HEADS, 64, n_kv_heads=2, causal=causal, mlp=mlp)
    randomise_norms(block)
    x = torch.randn(2, T, DIM, requires_grad=True)
    y = block(x)
    h = x + block.attn_branch(x)
    torch.testing.assert_close(y, h + block.mlp_branch(h))
    y.square().mean().backward()
    for name, p in [("x", x), *block.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with pytest.raises(ValueError, match="mlp"):
        Block(DIM, HEADS, 64, mlp="gelu")


@pytest.mark.parametrize("mlp", ["relu2", "swiglu"])
def test_post_norm_block_matches_formula_and_outputs_unit_rms(mlp):
    block = PostNormBlock(DIM, HEADS, 64, n_kv_heads=2, causal=False, mlp=mlp)
    x = 10 * torch.randn(2, T, DIM)  # far from unit RMS
    y = block(x)
    h = rms_ref(x + attention_ref(block.attn, x), 1.0, block.norm1.eps)
    torch.testing.assert_close(y, rms_ref(h + block.mlp(h), 1.0, block.norm2.eps))
    rms = y.pow(2).mean(-1).sqrt()  # (B, T): one per token
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-5, rtol=0)
    for _ in range(20):  # a recursion of the same block stays at unit RMS
        y = block(y)
    rms = y.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-5, rtol=0)
    pre = Block(DIM, HEADS, 64, n_kv_heads=2, causal=False, mlp=mlp)
    pre.load_state_dict(block.state_dict())  # same weights, pre-norm: not normalised
    assert pre(x).pow(2).mean(-1).sqrt().min() > 2


@pytest.mark.parametrize(
    ("g_init", "g_max", "expected"),
    [(0.5, 0.75, 0.5), (0.75, 0.75, 0.75 * GATE_RATIO_MAX), (0.1, 1.0, 0.1)],
)
def test_gated_block_gates_at_init(g_init, g_max, expected):
    block = GatedBlock(DIM, HEADS, 64, gate_init=g_init, gate_max=g_max)
    for g in block.gates():
        assert g.shape == (DIM,)
        torch.testing.assert_close(g, torch.full((DIM,), expected), atol=1e-6, rtol=0)
    init_weights(block)  # leaves the gates alone
    torch.testing.assert_close(block.gates()[0], torch.full((DIM,), expected), atol=1e-6, rtol=0)


def test_gated_block_output_and_grads():
    block = GatedBlock(DIM, HEADS, 64, mlp="swiglu", gate_init=0.5, gate_max=0.75)
    init_weights(block)
    with torch.no_grad():  # distinct per-channel gates, to catch a mix-up of g_a and g_m
        block.rho_attn.normal_()
        block.rho_mlp.normal_()
    x = torch.randn(2, T, DIM)
    y = block(x)
    g_a = 0.75 * torch.sigmoid(block.rho_attn)
    g_m = 0.75 * torch.sigmoid(block.rho_mlp)
    h = x + g_a * block.attn_branch(x)
    torch.testing.assert_close(y, h + g_m * block.mlp_branch(h))
    assert block.attn.wo.weight.abs().sum() > 0 and block.mlp.w2.weight.abs().sum() > 0
    y.square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gated_block_rejects_bad_gates():
    with pytest.raises(ValueError, match="gate_init"):
        GatedBlock(DIM, HEADS, 64, gate_init=0.9, gate_max=0.75)


def test_init_weights():
    block = Block(256, 4, 512, mlp="swiglu")
    randomise_norms(block)
    init_weights(block, std=0.02, out_std=0.0)
    assert block.attn.wo.weight.abs().max() == 0 and block.mlp.w2.weight.abs().max() == 0
    for w in (block.attn.wq.weight, block.attn.wk.weight, block.mlp.w1.weight):
        assert abs(w.std().item() - 0.02) < 0.002
    for norm in (block.norm1, block.norm2, block.attn.q_norm):
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
    emb = torch.nn.Embedding(100, 256)
    init_weights(emb, std=0.5)
    assert abs(emb.weight.std().item() - 0.5) < 0.05


def test_attention_in_bfloat16_runs():
    attn = Attention(DIM, HEADS, 2).to(torch.bfloat16)
    x = torch.randn(1, T, DIM, dtype=torch.bfloat16)
    cache = KVCache()
    y = torch.cat([attn(x[:, :4], cache=cache), attn(x[:, 4:], cache=cache)], dim=1)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), attn(x).float(), atol=3e-2, rtol=3e-2)
