"""The block numerics options (attractor/nn BlockStyle, TransformerShape fields): each form
against a formula written out here, the way the paper's code (github jacobfa/Attractor)
states it: interleaved rotary as complex multiplication of (x_2i, x_2i+1), weightless
QK-norm after rotary, 0.5 relu^2, the norm eps, the 1e-6 gate clamp, the value-embedding
gate on the normed input."""

import math
from functools import partial

import pytest
import torch

from attractor.core.typed_config import ConfigError, from_data
from attractor.nn import (
    Attention,
    Block,
    BlockStyle,
    GatedBlock,
    ReLU2MLP,
    Rotary,
    SwiGLU,
    TransformerShape,
    ValueEmbedding,
    apply_rotary,
    block_stack,
    init_weights,
)

DIM, HEADS, T = 32, 4, 9


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rotate_interleaved_ref(x, start, base):
    """(x_2i + i x_2i+1) * exp(i p theta_i), theta_i = base^(-2i/Dh), in float64."""
    d = x.size(-1) // 2
    theta = base ** (-2.0 * torch.arange(d, dtype=torch.float64) / x.size(-1))
    angles = torch.outer(torch.arange(start, start + x.size(-2), dtype=torch.float64), theta)
    z = torch.complex(x[..., 0::2].double(), x[..., 1::2].double())
    z = z * torch.polar(torch.ones_like(angles), angles)
    return torch.stack((z.real, z.imag), dim=-1).flatten(-2).to(x.dtype)


def test_interleaved_rotary_is_complex_multiplication_of_adjacent_pairs():
    rot = Rotary(8, base=50000.0)
    x = torch.randn(2, 3, T, 8)
    cos, sin = rot(T, start=4)
    out = apply_rotary(x, cos, sin, "interleaved")
    torch.testing.assert_close(out, rotate_interleaved_ref(x, 4, 50000.0))
    assert not torch.allclose(out, apply_rotary(x, cos, sin, "half"), atol=1e-3)
    assert not torch.allclose(out, rotate_interleaved_ref(x, 4, 10000.0), atol=1e-3)


def attention_ref(attn, x, base, weightless):
    """softmax(n(R q) n(R k)^T / sqrt(Dh) + causal mask) V with n a weightless rms norm
    (eps float32 eps) after interleaved rotary, written from the module's weights."""
    B, T_, C = x.shape
    H, Dh = attn.n_heads, attn.head_dim
    q = (x @ attn.wq.weight.T).view(B, T_, H, Dh).transpose(1, 2)
    k = (x @ attn.wk.weight.T).view(B, T_, H, Dh).transpose(1, 2)
    v = (x @ attn.wv.weight.T).view(B, T_, H, Dh).transpose(1, 2)
    q, k = rotate_interleaved_ref(q, 0, base), rotate_interleaved_ref(k, 0, base)
    if weightless:
        eps = torch.finfo(torch.float32).eps
        q = q / torch.sqrt(q.pow(2).mean(-1, keepdim=True) + eps)
        k = k / torch.sqrt(k.pow(2).mean(-1, keepdim=True) + eps)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    scores = scores.masked_fill(torch.ones(T_, T_, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T_, C)
    return y @ attn.wo.weight.T


@pytest.mark.parametrize("qk_norm", ["weightless", "none"])
def test_reference_attention_forms(qk_norm):
    attn = Attention(DIM, HEADS, qk_norm=qk_norm, rope_base=50000.0, rope_layout="interleaved")
    assert attn.q_norm is None and attn.k_norm is None  # no weight in either form
    x = torch.randn(2, T, DIM) * 3
    ref = attention_ref(attn, x, 50000.0, weightless=qk_norm == "weightless")
    torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)


def test_learned_qk_norm_takes_norm_eps():
    attn = Attention(DIM, HEADS, norm_eps=1e-5)
    assert attn.q_norm.eps == 1e-5 and attn.k_norm.eps == 1e-5
    assert Attention(DIM, HEADS).q_norm.eps == 1e-6  # ours, the default


def test_bad_attention_forms_are_one_line_errors():
    with pytest.raises(ValueError, match="qk_norm must be learned, weightless or none"):
        Attention(DIM, HEADS, qk_norm="after")
    with pytest.raises(ValueError, match="rope_layout must be half or interleaved"):
        Attention(DIM, HEADS, rope_layout="zigzag")


@pytest.mark.parametrize("cls", [ReLU2MLP, SwiGLU])
def test_mlp_scale_multiplies_the_hidden_activation(cls):
    half, plain = cls(DIM, 64, scale=0.5), cls(DIM, 64)
    plain.load_state_dict(half.state_dict())
    x = torch.randn(3, DIM)
    w1 = half.w1.weight
    if cls is ReLU2MLP:
        ref = (0.5 * torch.relu(x @ w1.T) ** 2) @ half.w2.weight.T
        torch.testing.assert_close(half(x), ref)
    torch.testing.assert_close(half(x), 0.5 * plain(x), atol=1e-6, rtol=1e-5)


def test_block_style_reaches_every_part_of_a_block():
    style = BlockStyle(1e-5, "weightless", 50000.0, "interleaved", 0.5)
    block = Block(DIM, HEADS, 64, style=style)
    assert block.norm1.eps == block.norm2.eps == 1e-5
    assert block.attn.weightless_qk_norm and block.attn.rope_layout == "interleaved"
    assert block.attn.rotary.base == 50000.0 and block.mlp.scale == 0.5
    shape = TransformerShape(
        vocab_size=11, dim=DIM, n_heads=HEADS, norm_eps=1e-5, qk_norm="weightless",
        rope_base=50000.0, rope_layout="interleaved", mlp_scale=0.5,
    )  # fmt: skip
    assert shape.block_style() == style
    (built,) = block_stack(shape, 1)
    assert built.attn.rotary.base == 50000.0 and built.norm1.eps == 1e-5


def test_shape_defaults_are_ours():
    s = TransformerShape(vocab_size=11, dim=DIM, n_heads=HEADS)
    assert s.block_style() == BlockStyle()
    assert (s.norm_eps, s.qk_norm, s.rope_base, s.rope_layout, s.mlp_scale) == (
        1e-6, "learned", 10000.0, "half", 1.0,
    )  # fmt: skip


def test_typed_loader_rejects_bad_style_values():
    base = dict(vocab_size=11, dim=DIM, n_heads=HEADS)
    with pytest.raises(
        ConfigError, match=r"shape.rope_layout: 'zigzag' is not one of 'half', 'interleaved'"
    ):
        from_data(TransformerShape, {**base, "rope_layout": "zigzag"}, "shape")
    with pytest.raises(ConfigError, match="shape.qk_norm: True is not one of 'learned'"):
        from_data(TransformerShape, {**base, "qk_norm": True}, "shape")
    with pytest.raises(ConfigError, match="norm_eps > 0"):
        from_data(TransformerShape, {**base, "norm_eps": 0.0}, "shape")


def test_gate_clamp_sets_the_starting_ratio():
    block = GatedBlock(DIM, HEADS, 64, gate_init=0.75, gate_max=0.75, gate_clamp=1e-6)
    rho = math.log((1 - 1e-6) / 1e-6)  # logit(1 - 1e-6) = 13.8, the paper's raw_gamma init
    torch.testing.assert_close(block.rho_attn, torch.full((DIM,), rho))
    torch.testing.assert_close(block.gates()[1], torch.full((DIM,), 0.75 * (1 - 1e-6)))
    with pytest.raises(ValueError, match="gate_clamp"):
        GatedBlock(DIM, HEADS, 64, gate_clamp=0.0)


def test_value_embedding_gate_reads_the_normed_input_when_given_a_function():
    block = Block(DIM, HEADS, 64)
    init_weights(block)
    with torch.no_grad():
        block.norm1.weight.uniform_(0.5, 1.5)
    ve = ValueEmbedding(11, DIM, HEADS)
    ids, x = torch.randint(0, 11, (2, T)), torch.randn(2, T, DIM) * 4
    normed = block(x, value_embed=partial(ve, ids))
    h = x + block.attn(block.norm1(x), value_embed=ve(ids, block.norm1(x)))  # by hand
    torch.testing.assert_close(normed, h + block.mlp(block.norm2(h)))
    assert not torch.allclose(normed, block(x, value_embed=ve(ids, x)), atol=1e-4)
