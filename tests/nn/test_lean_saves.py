"""The layers that save little for backward (rms_norm and relu2, with backwards of their
own; apply_rotary in the (B, T, H, Dh) layout): forward values equal to the plain ops bit
for bit, gradients and second derivatives by finite differences (gradcheck, gradgradcheck
in float64), and what each saves for backward, counted."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from attractor.nn import Block, apply_rotary
from attractor.nn.block import BlockStyle
from attractor.nn.mlp import relu2
from attractor.nn.norm import rms_norm
from attractor.train.memory import SavedTensors

F32 = 4  # bytes
EPSILONS = (1e-6, 1e-5, torch.finfo(torch.float32).eps)
PAPER_STYLE = BlockStyle(
    norm_eps=1e-5, qk_norm="weightless", rope_base=5e4, rope_layout="interleaved", mlp_scale=0.5
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -----------------------------------------------------------------------------
# The plain ops, as the code computed them before it had its own backward


def plain_rms_norm(x, w, eps):
    y = F.rms_norm(x.float(), (x.size(-1),), None if w is None else w.float(), eps)
    return y.to(x.dtype)


def plain_rotate(x, cos, sin, layout):
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if layout == "half":
        a, b = x.chunk(2, dim=-1)
        return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


def plain_relu2(u, scale):
    h = F.relu(u).square()
    return h if scale == 1.0 else scale * h


def tables(T, half_dim, dtype=torch.float32):
    angles = torch.outer(torch.arange(T, dtype=dtype), torch.rand(half_dim, dtype=dtype))
    return angles.cos(), angles.sin()


def away_from_zero(*shape):
    """float64 values with |u| in [0.2, 2]: finite differences never cross relu's kink."""
    u = torch.rand(*shape, dtype=torch.float64) * 1.8 + 0.2
    return u * torch.where(torch.rand(*shape) < 0.5, -1.0, 1.0).double()


# -----------------------------------------------------------------------------
# rms_norm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("eps", EPSILONS)
def test_rms_norm_forward_is_f_rms_norm_bit_for_bit(dtype, affine, eps):
    x = (3 * torch.randn(4, 9, 64)).to(dtype).requires_grad_()
    w = torch.randn(64, requires_grad=True) if affine else None
    assert torch.equal(rms_norm(x, w, eps), plain_rms_norm(x, w, eps))
    with torch.no_grad():
        assert torch.equal(rms_norm(x, w, eps), plain_rms_norm(x, w, eps))


@pytest.mark.parametrize("affine", [True, False])
def test_rms_norm_gradients_and_second_derivatives(affine):
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True) if affine else None
    inputs = (x, w) if affine else (x,)
    fn = (lambda x, w: rms_norm(x, w, 1e-5)) if affine else (lambda x: rms_norm(x, None, 1e-5))
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_gradients_equal_autograd_through_f_rms_norm(dtype):
    x = (2 * torch.randn(6, 32)).to(dtype).requires_grad_()
    w = (1 + 0.1 * torch.randn(32)).requires_grad_()
    g = torch.randn(6, 32).to(dtype)
    ours = torch.autograd.grad(rms_norm(x, w, 1e-6), (x, w), g)
    theirs = torch.autograd.grad(plain_rms_norm(x, w, 1e-6), (x, w), g)
    assert ours[0].dtype == dtype and ours[1].dtype == torch.float32
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_saves_its_input_in_its_dtype_and_one_float_per_row(dtype):
    x = torch.randn(4, 7, 16).to(dtype).requires_grad_()
    w = torch.randn(16, requires_grad=True)
    with SavedTensors(exclude=[w]) as saved:
        rms_norm(x, w, 1e-6)
    assert saved.bytes == x.nbytes + F32 * 4 * 7  # x itself (no float32 copy) and 1/rms
    assert saved.storages == 2


# -----------------------------------------------------------------------------
# apply_rotary


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_forward_is_the_plain_rotation_bit_for_bit(layout, dtype):
    cos, sin = tables(10, 8)
    x = torch.randn(2, 3, 10, 16).to(dtype).requires_grad_()  # (B, H, T, Dh)
    assert torch.equal(apply_rotary(x, cos, sin, layout), plain_rotate(x, cos, sin, layout))
    xt = torch.randn(2, 10, 3, 16).to(dtype).requires_grad_()  # (B, T, H, Dh)
    c, s = cos.unsqueeze(1), sin.unsqueeze(1)
    assert torch.equal(apply_rotary(xt, c, s, layout), plain_rotate(xt, c, s, layout))


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rotary_gradients_and_second_derivatives(layout):
    cos, sin = tables(5, 4, torch.float64)
    x = torch.randn(2, 5, 3, 8, dtype=torch.float64, requires_grad=True)

    def fn(x):
        return apply_rotary(x, cos.unsqueeze(1), sin.unsqueeze(1), layout)

    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rotary_saves_only_the_tables(layout):
    cos, sin = tables(10, 8)
    x = torch.randn(2, 3, 10, 16, requires_grad=True)
    with SavedTensors(exclude=[cos, sin]) as saved:
        apply_rotary(x, cos, sin, layout)
    assert saved.bytes == 0 and saved.excluded_bytes == cos.nbytes + sin.nbytes


# -----------------------------------------------------------------------------
# relu2


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_relu2_forward_is_the_plain_squared_relu_bit_for_bit(scale, dtype):
    u = (3 * torch.randn(4, 50, 64)).to(dtype).requires_grad_()
    assert torch.equal(relu2(u, scale), plain_relu2(u, scale))


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_relu2_gradients_and_second_derivatives(scale):
    u = away_from_zero(4, 12).requires_grad_()
    assert gradcheck(lambda u: relu2(u, scale), (u,))
    assert gradgradcheck(lambda u: relu2(u, scale), (u,))


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_relu2_gradients_equal_autograd_through_the_plain_ops(scale, dtype):
    """First and second derivatives (the Jacobian penalty's double backward) on values
    that include exact zeros and negatives: relu's kink as autograd treats it."""
    u = torch.cat((3 * torch.randn(200), torch.zeros(8))).to(dtype).requires_grad_()
    g = torch.randn(208).to(dtype).requires_grad_()
    e = torch.randn(208).to(dtype)
    results = []
    for fn in (relu2, plain_relu2):
        (du,) = torch.autograd.grad(fn(u, scale), u, g, create_graph=True)
        results.append((du, *torch.autograd.grad(du, (u, g), e)))
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for ours, theirs in zip(*results, strict=True):
        assert ours.dtype == theirs.dtype == dtype
        torch.testing.assert_close(ours, theirs, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_relu2_saves_only_its_output(dtype):
    u = torch.randn(8, 64).to(dtype).requires_grad_()
    with SavedTensors() as saved:
        relu2(u, 0.5)
    assert saved.bytes == u.nbytes and saved.storages == 1


def test_relu2_in_float16_keeps_plain_autograd():
    """float16 squares are subnormal for |u| < 2^-7: u = 1.1 * 2^-10 squares to 19.35 units
    of 2^-24, rounded to 19, so sqrt(h) would be 1 % below relu(u)."""
    u = torch.full((16,), 1.1 * 2.0**-10, dtype=torch.float16, requires_grad=True)
    (du,) = torch.autograd.grad(relu2(u).sum(), u)
    assert torch.equal(du, 2 * u.detach())  # 2 relu(u), exactly


# -----------------------------------------------------------------------------
# A whole block


@pytest.mark.parametrize("style", [BlockStyle(), PAPER_STYLE], ids=["ours", "paper"])
def test_block_gradients(style):
    """The whole block in float64 against finite differences, for x and every weight the
    new backwards reach: the norms', the QK-norm's (ours) and the MLP's."""
    block = Block(16, 2, 32, max_seq_len=8, style=style).double()
    names = [n for n, _ in block.named_parameters() if "norm" in n or "mlp" in n]
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    weights = [block.get_parameter(n) for n in names]

    def fn(x, *w):
        return torch.func.functional_call(block, dict(zip(names, w, strict=True)), (x,))

    assert gradcheck(fn, (x, *weights), fast_mode=True)


def test_norm_and_mlp_second_derivatives():
    """The double backward the Jacobian penalty takes through a block's norm and MLP
    (attention's CPU flash kernel has none of its own)."""
    block = Block(16, 2, 32, max_seq_len=8, style=PAPER_STYLE).double()
    x = away_from_zero(2, 5, 16).requires_grad_()
    assert gradgradcheck(lambda x: block.mlp_branch(x), (x,), fast_mode=True)


@pytest.mark.parametrize("style", [BlockStyle(), PAPER_STYLE], ids=["ours", "paper"])
def test_block_saves_fourteen_activations_of_its_width(style):
    """Hand count, N = B T tokens of width C, H heads: x, norm1 x, q and k (the QK-norm's
    input), attention's q, k, v and output, h, norm2 h (N C each), s relu(u)^2 (4 N C),
    and per row 1/rms of norm1, norm2 (N each), of q and k (N H each) and attention's
    logsumexp (N H): 14 N C + 2 N + 3 N H floats. No copy of any of them."""
    B, T, C, H = 2, 12, 32, 4
    block = Block(C, H, 4 * C, max_seq_len=T, style=style)
    x = torch.randn(B, T, C, requires_grad=True)
    N = B * T
    with SavedTensors(exclude=[*block.parameters(), *block.buffers()]) as saved:
        block(x)
    assert saved.bytes == F32 * (14 * N * C + 2 * N + 3 * N * H)
