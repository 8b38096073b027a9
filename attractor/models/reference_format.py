"""The paper's release format (github jacobfa/Attractor, commit fcf045f): read into our models.

A release directory holds `config.json`, the reference's config dataclass as a dict plus
`"_class_name"` (AttractorConfig, EQLMConfig: an old name of the same model, GPTConfig,
ParcaeConfig), and its state dict in `model.safetensors`, `model.pt`, `pytorch_model.bin`
or `model.bin`. `reference_config` maps the config field by field onto ours, with the
options that make our model compute what the reference computes (interleaved rotary,
weightless QK-norm after rotary, 0.5 ReLU^2, its norm eps, its gate clamp, its solve one
sample a sequence, ...). A field
that changes the computation in a way we cannot express is one `CheckpointError` naming
it; a field we do not know is one too. `reference_state` strips the wrapper prefixes,
drops the rotary table `freqs_cis` and the tied `lm_head.weight`, and renames every key
into our modules; `load_reference` builds the model and loads the weights strictly (a
shape mismatch names the reference key and both shapes). Weights load without running
code (`attractor.models.weights_io`).

An imported Attractor solves as the reference does, one sample a sequence
(`PAPER_LM_SOLVE`); `model.overrides.solve_unit: position` solves per position, exactly
causal. A difference left as it is (outside a forward): its
Parcae draws training depths from a generator seeded by the step, ours from torch's global
generator; in evaluation it runs `mean_recurrence` recurrences like ours.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attractor.core.typed_config import ConfigError, from_data
from attractor.engine import PAPER_LM_SOLVE, FixedPointConfig, SolverConfig
from attractor.models.registry import family
from attractor.models.weights_io import CheckpointError, read_weights

WEIGHT_FILES = ("model.safetensors", "model.pt", "pytorch_model.bin", "model.bin")
PREFIXES = ("module.", "_orig_mod.", "model.", "_forward_module.")

# Fields that do not change what a loaded model computes: labels, kernels, checkpointing,
# parallelism, optimizer settings, distributed seeding, how weights were first drawn
# (the file's weights replace them; init_strategy is checked below for its scales).
IGNORED = {
    "name", "hf_config", "model_class_name", "_is_recurrent_block_config", "attn_impl",
    "activation_checkpoint_impl", "simple_ops", "strategy", "use_fused_head",
    "init_orthogonal", "skip_initialization", "padding_multiple", "fp_lr_scale", "fp_wd",
    "lockstep_n", "lockstep_k", "curriculum_target",
}  # fmt: skip
# Fields that must hold exactly this value: any other changes the computation and has no
# counterpart here. (init_strategy: the embedding and logit scales of others are unknown
# to this reader; sampling_scheme and recurrent_iteration_method: other depth draws.)
REQUIRED: dict[str, Any] = {
    "use_abacus": False, "randomize_positions_from": None, "logit_softcap": None,
    "bias": False, "qk_bias": False, "clip_qkv": None, "debias_attention": False,
    "center_attention": False, "causal": True, "mup_model_scaling_factor": 1,
    "block_class_name": "TransformerPreNormBlock", "norm_class_name": "RMSNorm",
    "mlp_class_name": "BaseMLP", "nonlin_name": "ReLU2", "init_strategy": "scaled-zero",
    "injection_type": "diagonal", "sampling_scheme": "poisson-truncated-full",
    "recurrent_iteration_method": "per-sequence",
}  # fmt: skip
ROPE_REQUIRED = {"use_rope": True, "rope_condense_ratio": 1}
SHAPE = {
    "block_size", "n_embd", "intermediate_size", "num_attention_heads", "num_key_value_heads",
    "vocab_size", "padded_vocab_size", "rope_settings", "norm_eps", "qk_norm", "tie_embeddings",
}  # fmt: skip
SOLVERS = {"anderson": "anderson", "fpi": "picard"}
STATE_INITS = {"zero": "zero", "like-init": "random"}


def is_reference_dir(directory: Path) -> bool:
    """Whether `directory` holds a config.json with a "_class_name" (the release format)."""
    path = directory / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "_class_name" in data


def _error(where: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{where}: {problem}")


def _check_fields(data: dict[str, Any], own: frozenset[str], where: str) -> None:
    """Every field known (`own`: the class's own), every fixed field at its one value."""
    for key, value in data.items():
        if key == "_class_name" or key in IGNORED or key in SHAPE or key in own:
            continue
        if key not in REQUIRED:
            raise _error(
                where,
                f"unknown field {key!r} = {value!r}: this reader cannot tell whether it "
                "changes the computation; remove it if it does not, or update attractor",
            )
        if value != REQUIRED[key] or type(value) is not type(REQUIRED[key]):
            raise _error(
                where,
                f"{key} = {value!r} changes the computation and has no counterpart in "
                f"attractor (supported: {REQUIRED[key]!r}); this checkpoint cannot be loaded",
            )
    rope = data.get("rope_settings") or {}
    for key, value in rope.items():
        if key in ROPE_REQUIRED and value != ROPE_REQUIRED[key]:
            raise _error(
                where,
                f"rope_settings.{key} = {value!r} is not supported (only "
                f"{ROPE_REQUIRED[key]!r}); this checkpoint cannot be loaded",
            )
        if key not in ROPE_REQUIRED and key != "rope_base":
            raise _error(where, f"unknown field rope_settings.{key} = {value!r}")


def _need(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise _error(where, f"missing field {key!r}; is this a complete release config.json?")
    return data[key]


def _shape_fields(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Our TransformerShape / LanguageModelConfig fields, with the reference's numerics."""
    dim, heads = _need(data, "n_embd", where), _need(data, "num_attention_heads", where)
    hidden = data.get("intermediate_size") or 4 * dim
    ratio = hidden / dim
    if int(ratio * dim) != hidden:
        raise _error(where, f"intermediate_size {hidden} is not expressible as a ratio of {dim}")
    vocab, padded = _need(data, "vocab_size", where), data.get("padded_vocab_size")
    if padded is None:  # the reference rounds up to padding_multiple (its Config.__post_init__)
        multiple = data.get("padding_multiple", 512)
        padded = -(-vocab // multiple) * multiple
    vocab = min(vocab, padded)
    kv = data.get("num_key_value_heads")
    return dict(
        vocab_size=vocab,
        padded_vocab_size=padded if padded != vocab else None,
        dim=dim,
        n_heads=heads,
        n_kv_heads=None if kv in (None, heads) else kv,
        mlp_ratio=ratio,
        mlp="relu2",
        max_seq_len=_need(data, "block_size", where),
        init_std=math.sqrt(2.0 / (5.0 * dim)),  # the reference's scaled-zero std
        norm_eps=float(data.get("norm_eps", 1e-5)),
        qk_norm="weightless" if data.get("qk_norm", False) else "none",
        rope_base=float((data.get("rope_settings") or {}).get("rope_base", 50000)),
        rope_layout="interleaved",
        mlp_scale=0.5,  # its ReLU2 is 0.5 relu(x)^2
    )


def _attractor_fields(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The AttractorLM fields: depths, gates, the solve and its backward."""
    if data.get("recurrent_embedding_dimension", data["n_embd"]) != data["n_embd"]:
        raise _error(where, "recurrent_embedding_dimension differs from n_embd: not supported")
    name = data.get("solver", "anderson")
    if name not in SOLVERS:
        raise _error(where, f"solver {name!r} is not supported (anderson or fpi)")
    max_iter = int(_need(data, "max_iter", where))
    solver = SolverConfig(
        SOLVERS[name],
        tol=float(data.get("tol", 1e-4)),
        max_iter=max_iter,
        min_iter=min(int(data.get("min_iter", 0) or 0), max_iter),
        history=int(data.get("anderson_m", 5)),
        mixing=float(data.get("anderson_beta", 1.0)),
        **PAPER_LM_SOLVE,  # its solve: last image, no freezing, lambda 1e-4 as it is
    )
    backward = data.get("backward_type", "onestep")
    if backward == "onestep":  # u = v + J^T v, J^T v clipped when adjoint_grad_clip is set
        clip = data.get("adjoint_grad_clip")
        fixed_point = FixedPointConfig(solver, solver, backward="neumann", neumann_clip=clip)
    elif backward in SOLVERS:  # the adjoint u = J^T u + v, solved by Anderson or Picard
        bw_max = int(data.get("backward_max_iter", 64))
        adjoint = SolverConfig(
            SOLVERS[backward],
            tol=float(data.get("backward_tol", 1e-4)),
            max_iter=bw_max,
            min_iter=min(int(data.get("backward_min_iter", 0) or 0), bw_max),
            history=solver.history,
            mixing=solver.mixing,
        )
        fixed_point = FixedPointConfig(solver, solver, backward="adjoint", adjoint_solver=adjoint)
    else:
        raise _error(where, f"backward_type {backward!r} is not supported (onestep, anderson, fpi)")
    scale_init = data.get("layer_scale_init")
    if scale_init is None:
        raise _error(where, "layer_scale_init = null (an ungated head) is not supported")
    return dict(
        n_backbone=_need(data, "n_backbone_layers", where),
        n_head_layers=_need(data, "n_fp_blocks", where),
        gate_init=float(scale_init),
        gate_max=float(data.get("gamma_max") or 1.0),
        gate_clamp=1e-6,  # its FixedPointBlock clamps the ratio to [1e-6, 1 - 1e-6]
        fixed_point=fixed_point,
        solve_unit="sequence",  # one residual and one set of Anderson weights a sequence
        tied_head=bool(data.get("tie_embeddings", True)),
    )


def _looped_fields(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The LoopedLM fields of a Parcae: depths, its norm, C, state start and depth draw."""
    dim, hidden = data["n_embd"], data.get("intermediate_size") or 4 * data["n_embd"]
    for key, want in (
        ("recurrent_embedding_dimension", dim),
        ("recurrent_intermediation_embedding_dimension", hidden),
        ("recurrent_num_attention_heads", data["num_attention_heads"]),
    ):
        if data.get(key) not in (None, want):
            raise _error(
                where, f"{key} = {data[key]!r} differs from the model's {want}: not supported"
            )
    state = data.get("state_init", "like-init")
    if state not in STATE_INITS:
        raise _error(where, f"state_init {state!r} is not supported (zero or like-init)")
    mean, bptt = int(_need(data, "mean_recurrence", where)), int(data.get("mean_backprop_depth", 1))
    return dict(
        n_prelude=_need(data, "n_layers_in_prelude", where),
        n_recurrent=_need(data, "n_layers_in_recurrent_block", where),
        n_coda=_need(data, "n_layers_in_coda", where),
        mean_depth=float(max(mean, bptt)),  # its Poisson(t + s), t = max(mean - s, 0)
        backprop_depth=bptt,
        eval_depth=mean,
        depth_draw="sequence",
        prelude_norm=bool(data.get("prelude_norm", False)),
        state_proj=True,
        state_init=STATE_INITS[state],
        value_gate_input="normed",
        value_embed_std=1.0,
    )


def _gpt_fields(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The GPT fields: depth, and value embeddings as the reference has them."""
    return dict(
        n_layers=_need(data, "n_layer", where),
        value_embeds=True,
        value_gate_input="normed",
        value_embed_std=1.0,
    )


def _attractor_stacks(config: Any) -> dict[str, tuple[str, int]]:
    return {
        "transformer.prelude.": ("backbone.", 0),
        "transformer.core_block.": ("head.blocks.", 0),
    }


def _gpt_stacks(config: Any) -> dict[str, tuple[str, int]]:
    return {"transformer.h.": ("blocks.", 0)}


def _parcae_stacks(config: Any) -> dict[str, tuple[str, int]]:
    n_p, n_r = config.n_prelude, config.n_recurrent
    return {
        "transformer.prelude.": ("prelude.", 0),
        "transformer.core_block.": ("recurrent.", n_p),
        "transformer.coda.": ("coda.", n_p + n_r),
    }


@dataclass(frozen=True)
class ReferenceClass:
    """One model class of the reference and our family that computes it: its own config
    fields, our fields from its config.json, and its block lists (reference prefix -> our
    prefix and the logical layer of its first block, where value embeddings are keyed)."""

    family: str
    own: frozenset[str]
    fields: Callable[[dict[str, Any], str], dict[str, Any]]
    stacks: Callable[[Any], dict[str, tuple[str, int]]]
    untied_ok: bool = False


ATTRACTOR = ReferenceClass(
    "attractor",
    frozenset({
        "n_backbone_layers", "n_fp_blocks", "solver", "max_iter", "min_iter", "tol",
        "anderson_m", "anderson_beta", "backward_type", "backward_max_iter",
        "backward_min_iter", "backward_tol", "adjoint_grad_clip", "layer_scale_init",
        "gamma_max", "recurrent_embedding_dimension",
    }),
    _attractor_fields,
    _attractor_stacks,
    untied_ok=True,
)  # fmt: skip
PARCAE = ReferenceClass(
    "looped",
    frozenset({
        "n_layers_in_prelude", "n_layers_in_recurrent_block", "n_layers_in_coda",
        "prelude_norm", "state_init", "mean_recurrence", "mean_backprop_depth",
        "recurrent_embedding_dimension", "recurrent_intermediation_embedding_dimension",
        "recurrent_num_attention_heads",
    }),
    _looped_fields,
    _parcae_stacks,
)  # fmt: skip
CLASSES = {
    "AttractorConfig": ATTRACTOR,
    "EQLMConfig": ATTRACTOR,  # the reference's old name of the same model
    "GPTConfig": ReferenceClass("gpt", frozenset({"n_layer"}), _gpt_fields, _gpt_stacks),
    "ParcaeConfig": PARCAE,
}


def reference_class(data: Any, where: str) -> ReferenceClass:
    """The reference class that config.json `data` names."""
    if not isinstance(data, dict) or "_class_name" not in data:
        raise _error(where, 'expected a JSON object with "_class_name"')
    name = data["_class_name"]
    if name not in CLASSES:
        raise _error(where, f"unknown _class_name {name!r}; this reader knows {', '.join(CLASSES)}")
    return CLASSES[name]


def reference_config(data: Any, where: str = "config.json") -> Any:
    """Our config for the reference's config.json `data`; CheckpointError if not expressible."""
    ref = reference_class(data, where)
    _check_fields(data, ref.own, where)
    if not ref.untied_ok and not data.get("tie_embeddings", False):
        raise _error(
            where, f"tie_embeddings = false (an untied {data['_class_name']}) is not supported"
        )
    fields = {**_shape_fields(data, where), **ref.fields(data, where)}
    try:
        return from_data(family(ref.family)[1], fields, ref.family)
    except ConfigError as e:
        raise _error(where, f"does not make a valid {ref.family} config ({e})") from None


# -----------------------------------------------------------------------------
# The state dict


def _strip(key: str) -> str:
    """`key` without any of the wrapper prefixes (DDP, torch.compile, Lightning, ...)."""
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


_BLOCK = {
    "norm_1.weight": "norm1.weight", "norm_2.weight": "norm2.weight",
    "attn.c_q.weight": "attn.wq.weight", "attn.c_k.weight": "attn.wk.weight",
    "attn.c_v.weight": "attn.wv.weight", "attn.c_proj.weight": "attn.wo.weight",
    "mlp.fc.weight": "mlp.w1.weight", "mlp.proj.weight": "mlp.w2.weight",
    "raw_gamma_attn": "rho_attn", "raw_gamma_mlp": "rho_mlp",
}  # fmt: skip


_SINGLE = {
    "transformer.wte.weight": "embed.weight", "transformer.ln_f.weight": "norm.weight",
    "transformer.ln_prelude.weight": "prelude_norm.weight",
    "transformer.adapter.A_log": "injection.A_log",
    "transformer.adapter.dt_bias": "injection.dt_param",
    "transformer.adapter.B": "injection.B.weight", "transformer.C.weight": "state_proj.weight",
    "lm_head.weight": "lm_head.weight",
}  # fmt: skip


def _our_name(key: str, ref: ReferenceClass, config: Any) -> str | None:
    """Our state-dict name for reference key `key`, or None if it has none."""
    if key in _SINGLE:
        return _SINGLE[key]
    if key.startswith("value_embeds.") and key.endswith(".weight"):
        return f"value_embeds.{key.split('.')[1]}.table.weight"
    for prefix, (ours, offset) in ref.stacks(config).items():
        if key.startswith(prefix):
            index, _, rest = key[len(prefix) :].partition(".")
            if rest == "attn.ve_gate.weight" and index.isdigit():
                return f"value_embeds.{int(index) + offset}.gate.weight"
            if rest in _BLOCK and index.isdigit():
                return f"{ours}{index}.{_BLOCK[rest]}"
    return None


def reference_state(
    raw: dict[str, Tensor], ref: ReferenceClass, config: Any, where: str
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(our state dict, our name -> reference key) from the file's state dict `raw`."""
    state = {_strip(k): v for k, v in raw.items()}
    state.pop("freqs_cis", None)  # the rotary table, a buffer we recompute
    tied = getattr(config, "tied_head", True)
    if tied and "lm_head.weight" in state:
        head = state.pop("lm_head.weight")
        wte = state.get("transformer.wte.weight")
        if wte is not None and not torch.equal(head, wte):
            raise _error(
                where, "lm_head.weight differs from transformer.wte.weight in a tied model"
            )
    out: dict[str, Tensor] = {}
    names: dict[str, str] = {}
    for key, value in state.items():
        ours = _our_name(key, ref, config)
        if ours is None:
            raise _error(
                where,
                f"unexpected tensor {key} {tuple(value.shape)}: no part of a {ref.family} model",
            )
        out[ours], names[ours] = value, key
    return out, names


def _weights_path(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(
        f"{directory} has none of {', '.join(WEIGHT_FILES)}; "
        "download the weights beside config.json"
    )


def load_reference(directory: Path, device: torch.device) -> nn.Module:
    """The model in release directory `directory`, on `device`, in the default dtype."""
    where = str(directory / "config.json")
    try:
        data = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _error(where, f"cannot be read as JSON ({e})") from None
    config = reference_config(data, where)
    ref = reference_class(data, where)
    path = _weights_path(directory)
    state, names = reference_state(read_weights(path), ref, config, str(path))
    with device:
        model = family(ref.family)[0](config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise _error(
            str(path),
            f"missing {len(missing)} tensor(s): nothing in the file fills our {missing[0]}; "
            "is the file complete, and does it belong to this config.json?",
        )
    for ours, t in state.items():
        if ours not in expected:
            raise _error(str(path), f"unexpected tensor {names[ours]} {tuple(t.shape)}")
        if t.shape != expected[ours].shape:
            raise _error(
                str(path),
                f"shape mismatch for {names[ours]}: {tuple(t.shape)} in the file, "
                f"{tuple(expected[ours].shape)} from config.json",
            )
    model.load_state_dict(state, strict=True)
    return model
