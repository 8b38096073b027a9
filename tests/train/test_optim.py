"""Optimizers of the LM recipe: Newton-Schulz, Muon, the parameter groups, the combined
optimizer (attractor/train/optim.py)."""

import ast
import copy
import io
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attractor.models
import attractor.nn
from attractor.models import build_model
from attractor.nn import set_optim_group
from attractor.train import optim
from attractor.train.optim import (
    CombinedOptimizer,
    Muon,
    OptimConfig,
    build_optimizer,
    newton_schulz,
    param_groups,
)

TINY = {
    "attractor": dict(vocab_size=64, dim=32, n_heads=2, n_backbone=2, n_head_layers=1),
    "gpt": dict(vocab_size=64, dim=32, n_layers=2, n_heads=2),
    "looped": dict(vocab_size=64, dim=32, n_heads=2, n_prelude=1, n_recurrent=1, n_coda=1),
    "deq": dict(vocab_size=64, dim=32, n_heads=2, n_layers=2),
}
GRID = dict(dim=32, n_heads=2, side=6, box_rows=2, box_cols=3, vocab_size=8)
GRID_PRESETS = {
    "reasoner": "reasoner-joint-cpu",
    "trm": "trm-cpu",
    "grid_transformer": "grid-transformer-cpu",
    "grid_attractor": "grid-attractor-cpu",
}


def tiny(kind: str, **fields):
    torch.manual_seed(0)
    if kind in GRID_PRESETS:
        return build_model(GRID_PRESETS[kind], **{**GRID, **fields})
    return build_model(kind=kind, **{**TINY[kind], "max_seq_len": 32, **fields})


def batch(vocab: int, rows: int = 4, length: int = 16):
    ids = torch.randint(0, vocab, (rows, length + 1), generator=torch.Generator().manual_seed(1))
    return ids[:, :-1], ids[:, 1:]


def train_step(model, opt, x, y) -> float:
    loss = model(x, y).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


# ----------------------------------------------------------------------------- config


def test_config_validates_and_converts_betas():
    with pytest.raises(ValueError, match="adamw"):
        OptimConfig(name="sgd")
    with pytest.raises(ValueError, match="lr"):
        OptimConfig(lr=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        OptimConfig(momentum=1.0)
    with pytest.raises(ValueError, match="betas"):
        OptimConfig(betas=[0.9])
    cfg = OptimConfig(betas=[0.9, 0.99])  # as YAML gives it
    assert cfg.betas == (0.9, 0.99) and isinstance(cfg.betas, tuple)


# ----------------------------------------------------------------------------- Newton-Schulz


def conditioned_square(n: int, gen: torch.Generator) -> torch.Tensor:
    """Q1 diag(s) Q2 with s in [0.1, 1]: a square Gaussian matrix has singular values near
    0, which 5 quintic steps cannot lift into the band (they multiply small ones by ~a^5)."""
    q1, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    q2, _ = torch.linalg.qr(torch.randn(n, n, generator=gen))
    s = 0.1 + 0.9 * torch.rand(n, generator=gen)
    return q1 @ torch.diag(s) @ q2


@pytest.mark.parametrize("shape", [(16, 64), (64, 16), (48, 48), (4, 300)])
def test_newton_schulz_singular_values_in_band_and_direction(shape):
    gen = torch.Generator().manual_seed(0)
    G = (
        conditioned_square(shape[0], gen)
        if shape[0] == shape[1]
        else torch.randn(*shape, generator=gen)
    )
    X = newton_schulz(G, steps=5)
    assert X.shape == G.shape and X.dtype == torch.float32
    sv = torch.linalg.svdvals(X)
    assert sv.min() >= 0.6 and sv.max() <= 1.25, (sv.min(), sv.max())
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    polar = (U @ Vh).float()
    assert F.cosine_similarity(X.flatten(), polar.flatten(), dim=0) > 0.9


def test_newton_schulz_batch_matches_one_by_one():
    G = torch.randn(3, 8, 20, generator=torch.Generator().manual_seed(2))
    X = newton_schulz(G)
    for i in range(3):
        torch.testing.assert_close(X[i], newton_schulz(G[i]), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Muon


def test_muon_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(4))])
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(2, 3, 4))])


def test_muon_first_step_is_scaled_orthogonal_direction():
    """A tall weight (rows 64 > cols 16): the step is lr * sqrt(64/16) * ~U V^T of the grad."""
    gen = torch.Generator().manual_seed(3)
    p = torch.nn.Parameter(torch.randn(64, 16, generator=gen))
    p0 = p.detach().clone()
    p.grad = torch.randn(64, 16, generator=gen)
    lr = 0.01
    Muon([p], lr=lr).step()
    delta = (p0 - p.detach()) / lr
    sv = torch.linalg.svdvals(delta / 2.0)
    assert sv.min() >= 0.6 and sv.max() <= 1.25
    U, _, Vh = torch.linalg.svd(p.grad, full_matrices=False)
    assert F.cosine_similarity(delta.flatten(), (U @ Vh).flatten(), dim=0) > 0.9


def test_muon_momentum_buffer_and_decoupled_weight_decay():
    gen = torch.Generator().manual_seed(4)
    p = torch.nn.Parameter(torch.randn(8, 8, generator=gen))
    opt = Muon([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    g1, g2 = torch.randn(8, 8, generator=gen), torch.randn(8, 8, generator=gen)
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], 0.9 * g1 + g2)
    # a zero gradient (zero momentum) leaves only the decay: p <- p (1 - lr wd)
    q = torch.nn.Parameter(torch.randn(8, 8, generator=gen))
    q0 = q.detach().clone()
    q.grad = torch.zeros(8, 8)
    Muon([q], lr=0.1, weight_decay=0.5).step()
    torch.testing.assert_close(q.detach(), q0 * 0.95)


def test_muon_alone_fits_a_linear_map():
    gen = torch.Generator().manual_seed(5)
    target = torch.randn(16, 32, generator=gen) / 32**0.5
    x = torch.randn(256, 32, generator=gen)
    w = torch.nn.Parameter(torch.zeros(16, 32))
    opt = Muon([w], lr=0.02)
    losses = []
    for _ in range(50):
        loss = (x @ (w - target).T).pow(2).mean()
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0]


def test_muon_and_adamw_train_a_tiny_gpt():
    model = build_model(kind="gpt", vocab_size=32, dim=32, n_layers=2, n_heads=2, max_seq_len=32)
    opt = build_optimizer(model, OptimConfig(name="muon"))
    assert set(opt.optimizers) == {"adamw", "muon"}
    x, y = batch(32)
    losses = [train_step(model, opt, x, y) for _ in range(50)]
    assert losses[-1] < 0.5 * losses[0], losses[::10]


# ----------------------------------------------------------------------------- groups


HIDDEN = re.compile(r"(attn\.w[qkvo]|mlp\.w[123]|injection\.B|readout\.halt)\.weight$")
TABLES = re.compile(
    r"^(embed\.weight|embed\.(tokens|pos|rows|cols|boxes)\.weight|.*\.table\.weight)$"
)


def expected_group(kind: str, name: str) -> str:
    """The group of a parameter from its name alone: an independent statement of the rules.

    head   every parameter of an attractor head (the LM's and the grid attractor's)
    embed  token and position tables, value-embedding tables
    muon   the weights of hidden Linear layers (attention, MLP, the looped injection B, the
           grid models' halting logit)
    adamw  everything else: norms, gates (rho, value-embedding gates), biases, the grid
           prefix, and the untied output projections (lm_head, the DEQ's head, the grid
           readout's cell projection)"""
    if kind in ("attractor", "grid_attractor") and name.startswith("head."):
        return "head"
    if TABLES.match(name):
        return "embed"
    if HIDDEN.search(name):
        return "muon"
    return "adamw"


def groups_by_param(groups) -> dict[int, dict]:
    found: dict[int, dict] = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in found, (
                f"a parameter is in both {found[id(p)]['name']} and {g['name']}"
            )
            found[id(p)] = g
    return found


CASES = [
    ("attractor", {}),
    ("attractor", dict(tied_head=False, injection="concat")),
    ("attractor", dict(tied_head=False, vocab_size=32)),  # vocab == dim: wq is not an output
    ("gpt", {}),
    ("looped", {}),
    ("deq", {}),
    ("reasoner", {}),
    ("reasoner", dict(positions="1d")),
    ("trm", {}),
    ("grid_transformer", {}),
    ("grid_attractor", {}),
]


@pytest.mark.parametrize("kind,fields", CASES)
def test_param_groups_cover_every_parameter_once_by_role(kind, fields):
    model = tiny(kind, **fields)
    cfg = OptimConfig(lr=0.01, muon_lr=0.02, head_lr_scale=0.5, embed_lr_scale=2.0)
    groups = param_groups(model, cfg)
    found = groups_by_param(groups)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(found) == trainable
    for name, p in model.named_parameters():
        assert found[id(p)]["name"] == expected_group(kind, name), name
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["muon"] == 0.02 and lrs["adamw"] == 0.01 and lrs["embed"] == 0.02
    if kind in ("attractor", "grid_attractor"):
        assert lrs["head"] == pytest.approx(0.005)
        head = {id(p) for p in model.head.parameters()}
        assert {id(p) for p in next(g for g in groups if g["name"] == "head")["params"]} == head
    for g in groups:
        assert g["base_lr"] == g["lr"]


def test_param_groups_spot_checks():
    """Named examples (docs/method.md section 4.2), so a wrong reference cannot hide a wrong
    rule."""
    model = tiny("looped")
    found = groups_by_param(param_groups(model, OptimConfig()))
    params = dict(model.named_parameters())

    def group_of(name):
        return found[id(params[name])]["name"]

    assert group_of("injection.B.weight") == "muon"
    assert group_of("prelude.0.attn.wq.weight") == "muon"
    assert group_of("recurrent.0.mlp.w2.weight") == "muon"
    assert group_of("injection.A_log") == "adamw"
    assert group_of("norm.weight") == "adamw"
    assert group_of("embed.weight") == "embed"

    model = tiny("attractor")
    found = groups_by_param(param_groups(model, OptimConfig()))
    params = dict(model.named_parameters())
    assert group_of("head.blocks.0.rho_attn") == "head"
    assert group_of("head.blocks.0.attn.wq.weight") == "head"
    assert group_of("backbone.1.attn.wo.weight") == "muon"
    assert group_of("backbone.0.norm1.weight") == "adamw"

    model = tiny("attractor", tied_head=False)
    found = groups_by_param(param_groups(model, OptimConfig()))
    params = dict(model.named_parameters())
    assert group_of("lm_head.weight") == "adamw"  # untied output projection

    model = tiny("gpt")
    found = groups_by_param(param_groups(model, OptimConfig()))
    params = dict(model.named_parameters())
    assert group_of("value_embeds.1.gate.weight") == "adamw"
    assert group_of("value_embeds.1.table.weight") == "embed"
    assert group_of("blocks.0.mlp.w1.weight") == "muon"

    model = tiny("deq")
    found = groups_by_param(param_groups(model, OptimConfig()))
    params = dict(model.named_parameters())
    assert group_of("head.weight") == "adamw"  # the DEQ's output projection

    model = tiny("grid_attractor")
    found = groups_by_param(param_groups(model, OptimConfig()))
    params = dict(model.named_parameters())
    assert group_of("readout.out.weight") == "adamw"  # the cell projection
    assert group_of("readout.halt.bias") == "adamw"
    assert group_of("embed.tokens.weight") == "embed"
    assert group_of("embed.prefix") == "adamw"
    assert group_of("head.blocks.0.mlp.w3.weight") == "head"
    assert group_of("backbone.0.attn.wk.weight") == "muon"


class Declared(nn.Module):
    """A toy model: a declared-"head" class holding a Linear and an Embedding, one
    instance-declared "adamw" Linear, one inner Linear re-declared "muon" inside the head."""

    class Head(nn.Module):
        optim_group = "head"

        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.table = nn.Embedding(3, 4)
            self.inner = set_optim_group(nn.Linear(4, 4, bias=False), "muon")

    def __init__(self):
        super().__init__()
        self.head = self.Head()
        self.out = set_optim_group(nn.Linear(4, 5, bias=False), "adamw")
        self.hidden = nn.Linear(4, 4)
        self.table = nn.Embedding(3, 4)


def test_the_nearest_declaring_module_decides_the_group():
    model = Declared()
    found = groups_by_param(param_groups(model, OptimConfig()))
    groups = {name: found[id(p)]["name"] for name, p in model.named_parameters()}
    assert groups == {
        "head.proj.weight": "head",
        "head.proj.bias": "head",
        "head.table.weight": "head",
        "head.inner.weight": "muon",
        "out.weight": "adamw",
        "hidden.weight": "muon",
        "hidden.bias": "adamw",
        "table.weight": "embed",
    }
    with pytest.raises(ValueError, match="unknown 'sgd'; choose one of muon, adamw, embed, head"):
        set_optim_group(nn.Linear(2, 2), "sgd")


def _model_classes() -> set[str]:
    """The class names `attractor.nn` and `attractor.models` export."""
    names = set()
    for package in (attractor.nn, attractor.models):
        for name in dir(package):
            if isinstance(getattr(package, name), type):
                names.add(name)
    return names


def test_optim_names_no_model_class():
    """train/optim.py takes the groups from what modules declare: it imports nothing from
    attractor.models or attractor.nn but attractor.nn.optim_groups (lazy imports included)
    and names none of their classes."""
    tree = ast.parse(Path(optim.__file__).read_text())
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
    from_model_layers = [
        m for m in imported if m.split(".")[:2] in (["attractor", "models"], ["attractor", "nn"])
    ]
    assert from_model_layers, "the scan should at least see the optim_groups import"
    assert all(m.startswith("attractor.nn.optim_groups") for m in from_model_layers), imported
    named = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    named |= {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and not (isinstance(n.value, ast.Name) and n.value.id == "nn")
    }
    classes = _model_classes()
    assert {"AttractorHead", "ValueEmbedding", "Block", "GridModel"} <= classes
    assert not named & classes, named & classes


def test_adamw_only_keeps_lr_scales():
    model = tiny("attractor")
    cfg = OptimConfig(name="adamw", lr=0.01, head_lr_scale=0.5)
    groups = param_groups(model, cfg)
    assert sorted(g["name"] for g in groups) == ["adamw", "embed", "head"]
    assert {g["name"]: g["lr"] for g in groups}["head"] == pytest.approx(0.005)
    opt = build_optimizer(model, cfg)
    assert set(opt.optimizers) == {"adamw"}
    assert len(groups_by_param(opt.param_groups)) == len(list(model.parameters()))


# ----------------------------------------------------------------------------- combined


def test_state_dict_round_trip_continues_identically():
    model = tiny("gpt")
    x, y = batch(64)
    opt = build_optimizer(model, OptimConfig())
    opt.set_lr_factor(0.7)
    for _ in range(3):
        train_step(model, opt, x, y)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)

    clone = copy.deepcopy(model)
    fresh = build_optimizer(clone, OptimConfig())
    unloaded = copy.deepcopy(model)
    train_step(unloaded, build_optimizer(unloaded, OptimConfig()), x, y)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert [g["lr"] for g in fresh.param_groups] == [g["lr"] for g in opt.param_groups]

    train_step(model, opt, x, y)
    train_step(clone, fresh, x, y)
    for (name, a), b in zip(model.named_parameters(), clone.parameters(), strict=True):
        assert torch.equal(a, b), name
    pairs = zip(model.parameters(), unloaded.parameters(), strict=True)
    assert not all(torch.equal(a, c) for a, c in pairs)  # the loaded state mattered


def test_load_state_dict_rejects_other_optimizer_layout():
    model = tiny("gpt")
    muon = build_optimizer(model, OptimConfig(name="muon"))
    adamw = build_optimizer(model, OptimConfig(name="adamw"))
    with pytest.raises(ValueError, match="optim.name"):
        adamw.load_state_dict(muon.state_dict())


def test_set_lr_factor_and_zero_grad():
    model = tiny("attractor")
    opt = build_optimizer(model, OptimConfig(lr=0.01, muon_lr=0.02))
    assert isinstance(opt, CombinedOptimizer)
    opt.set_lr_factor(0.25)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.25 * g["base_lr"])
    assert {g["name"]: g["lr"] for g in opt.param_groups}["muon"] == pytest.approx(0.005)
    opt.set_lr_factor(0.0)
    assert all(g["lr"] == 0.0 for g in opt.param_groups)
    x, y = batch(64)
    model(x, y).loss.backward()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
