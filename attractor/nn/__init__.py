"""Transformer layers and the attractor head (layer 2: imports `core` and `engine` only).

Read in this order: norm, rotary, kv_cache, attention, mlp, block, attractor_head, then
shape (the shape a model config shares), value_embedding, init and optim_groups.
"""

from attractor.nn.attention import Attention
from attractor.nn.attractor_head import INJECTIONS, AttractorHead
from attractor.nn.block import GATE_CLAMP, Block, BlockStyle, GatedBlock, PostNormBlock
from attractor.nn.init import init_scaled_orthogonal, init_weights, scaled_orthogonal_std
from attractor.nn.kv_cache import KVCache
from attractor.nn.mlp import MLPS, ReLU2MLP, SwiGLU
from attractor.nn.norm import RMSNorm
from attractor.nn.optim_groups import set_optim_group
from attractor.nn.rotary import Rotary, apply_rotary
from attractor.nn.shape import TransformerShape, block_stack, causal_keys
from attractor.nn.value_embedding import (
    ValueEmbedding,
    init_value_tables,
    value_embed_flops,
    value_embed_for,
    value_embeddings,
)

__all__ = [
    "GATE_CLAMP",
    "INJECTIONS",
    "MLPS",
    "Attention",
    "AttractorHead",
    "Block",
    "BlockStyle",
    "GatedBlock",
    "KVCache",
    "PostNormBlock",
    "RMSNorm",
    "ReLU2MLP",
    "Rotary",
    "SwiGLU",
    "TransformerShape",
    "ValueEmbedding",
    "apply_rotary",
    "block_stack",
    "causal_keys",
    "init_scaled_orthogonal",
    "init_value_tables",
    "init_weights",
    "scaled_orthogonal_std",
    "set_optim_group",
    "value_embed_flops",
    "value_embed_for",
    "value_embeddings",
]
