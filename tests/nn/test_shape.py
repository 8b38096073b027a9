"""The transformer shape and what is built from it (attractor/nn/shape.py), value embeddings
and optimizer-group declarations: FLOPs against the matmuls torch dispatches, widths and
masks against the built modules."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from attractor.core.typed_config import ConfigError
from attractor.nn import (
    AttractorHead,
    Block,
    PostNormBlock,
    ReLU2MLP,
    SwiGLU,
    TransformerShape,
    ValueEmbedding,
    block_stack,
    set_optim_group,
    value_embed_flops,
    value_embeddings,
)
from attractor.nn.optim_groups import GROUPS, declared_group
from attractor.nn.value_embedding import value_embed_layers

B, T = 2, 10


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def shape(**fields) -> TransformerShape:
    """A small shape: 11 tokens, width 32, 4 query heads, 2 KV heads."""
    base = dict(vocab_size=11, dim=32, n_heads=4, n_kv_heads=2, max_seq_len=16)
    return TransformerShape(**{**base, **fields})


def dispatched_flops(fn) -> float:
    """FLOPs of every matmul torch dispatches while fn runs (attention on the math kernel,
    whose score and value products are bmm calls the counter sees)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# -----------------------------------------------------------------------------
# TransformerShape


@pytest.mark.parametrize(
    ("dim", "ratio", "hidden"), [(32, 4.0, 128), (64, 2.5, 160), (40, 1.3, 52), (20, 0.33, 6)]
)
def test_mlp_hidden_is_ratio_times_width_and_sizes_the_built_mlps(dim, ratio, hidden):
    s = shape(dim=dim, n_heads=2, n_kv_heads=None, mlp_ratio=ratio)
    assert s.mlp_hidden() == hidden
    for mlp in ("relu2", "swiglu"):
        (block,) = block_stack(shape(dim=dim, n_heads=2, n_kv_heads=None, mlp_ratio=ratio,
                                     mlp=mlp), 1)  # fmt: skip
        assert block.mlp.w1.out_features == block.mlp.w2.in_features == hidden
        if mlp == "swiglu":
            assert block.mlp.w3.out_features == hidden


def test_shape_is_checked_by_the_typed_loader():
    assert isinstance(shape(mlp_ratio=4).mlp_ratio, float)  # an int ratio becomes a float
    with pytest.raises(ConfigError, match="^mlp: 'gelu' is not one of 'relu2', 'swiglu'$"):
        shape(mlp="gelu")
    with pytest.raises(ValueError, match="n_heads"):
        shape(dim=30)


@pytest.mark.parametrize("mlp", ["relu2", "swiglu"])
@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_block_flops_match_the_dispatched_matmuls(mlp, n_kv_heads):
    s = shape(mlp=mlp, n_kv_heads=n_kv_heads, mlp_ratio=2.5)
    (block,) = block_stack(s, 1, causal=False)
    x = torch.randn(B, T, s.dim)
    # bidirectional: every token attends over all T keys
    assert dispatched_flops(lambda: block(x)) / (B * T) == s.block_flops(keys=T)
    # keys=0 leaves only the weights: 2 FLOPs per weight matrix entry
    weights = sum(p.numel() for n, p in block.named_parameters() if n.endswith("weight")
                  and p.dim() == 2)  # fmt: skip
    assert s.block_flops(keys=0) == 2.0 * weights


# -----------------------------------------------------------------------------
# block_stack


@pytest.mark.parametrize("block", [Block, PostNormBlock])
def test_block_stack_builds_n_independent_blocks_of_the_shape(block):
    s = shape(mlp="swiglu")
    blocks = block_stack(s, 3, block=block)
    assert len(blocks) == 3 and all(type(b) is block for b in blocks)
    for b in blocks:
        assert isinstance(b.mlp, SwiGLU) and b.attn.n_heads == 4 and b.attn.n_kv_heads == 2
        assert b.attn.wq.in_features == 32
    assert blocks[0].attn.wq.weight.data_ptr() != blocks[1].attn.wq.weight.data_ptr()
    assert not torch.equal(blocks[0].attn.wq.weight, blocks[1].attn.wq.weight)
    assert isinstance(block_stack(shape(), 1)[0].mlp, ReLU2MLP)


def _run(blocks, x):
    for b in blocks:
        x = b(x)
    return x


@pytest.mark.parametrize("block", [Block, PostNormBlock])
def test_block_stack_causal_flag_sets_the_mask(block):
    x = torch.randn(1, T, 32)
    later = x.clone()
    later[:, -1] += torch.randn(32)  # change only the last token
    bidirectional = block_stack(shape(), 2, causal=False, block=block)
    assert all(not b.attn.causal for b in bidirectional)
    # a later token changes the first position's output
    first, first_later = _run(bidirectional, x)[:, 0], _run(bidirectional, later)[:, 0]
    assert (first - first_later).abs().max() > 1e-3
    causal = block_stack(shape(), 2, causal=True, block=block)
    assert all(b.attn.causal for b in causal)
    torch.testing.assert_close(_run(causal, x)[:, :-1], _run(causal, later)[:, :-1])


# -----------------------------------------------------------------------------
# Value embeddings


def test_value_embed_layers_alternate_ending_on_the_last():
    assert value_embed_layers(4) == [1, 3]
    assert value_embed_layers(5) == [0, 2, 4]
    assert value_embed_layers(1) == [0]


def test_value_embed_flops_match_the_dispatched_matmuls():
    s = shape()
    tables = value_embeddings(s, n_layers=4, enabled=True)
    assert sorted(tables) == ["1", "3"]
    assert all(ve.table.weight.shape == (11, s.kv_dim) for ve in tables.values())
    ids = torch.randint(0, 11, (B, T))
    x = torch.randn(B, T, s.dim)
    counted = dispatched_flops(lambda: [ve(ids, x) for ve in tables.values()])
    assert counted > 0
    assert value_embed_flops(tables.values()) == counted / (B * T)
    off = value_embeddings(s, n_layers=4, enabled=False)
    assert len(off) == 0 and value_embed_flops(off.values()) == 0


def test_value_embedding_matches_formula():
    ve = ValueEmbedding(11, 16, 2, gate_channels=8)
    ids = torch.randint(0, 11, (B, T))
    x = torch.randn(B, T, 32)
    g = 2 * torch.sigmoid(x[..., :8] @ ve.gate.weight.T)  # (B, T, Hkv)
    ref = ve.table.weight[ids].view(B, T, 2, 8) * g.unsqueeze(-1)
    torch.testing.assert_close(ve(ids, x), ref.view(B, T, 16))


# -----------------------------------------------------------------------------
# Optimizer groups


def test_set_optim_group_declares_the_group_and_rejects_unknown_ones():
    layer = torch.nn.Linear(4, 4)
    assert declared_group(layer) is None
    for group in GROUPS:
        assert set_optim_group(layer, group) is layer and declared_group(layer) == group
    with pytest.raises(ValueError) as err:
        set_optim_group(layer, "sgd")
    assert (
        str(err.value)
        == "optim group: unknown 'sgd'; choose one of muon, adamw, embed, head, signsgd"
    )
    assert declared_group(layer) == GROUPS[-1]  # the rejected call changed nothing


def test_modules_declare_their_own_groups():
    assert AttractorHead.optim_group == "head"  # a class declaration: every instance
    assert declared_group(AttractorHead(32, 4, 64)) == "head"
    ve = ValueEmbedding(11, 16, 2)
    assert declared_group(ve.gate) == "adamw" and declared_group(ve.table) is None
