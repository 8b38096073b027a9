"""Optimizers of the LM recipe: Newton-Schulz, Muon, the parameter groups, the combined
optimizer (attractor/train/optim.py)."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from attractor.models import build_model
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


def tiny(kind: str, **fields):
    torch.manual_seed(0)
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


def expected_group(kind: str, name: str, p: torch.Tensor) -> str:
    """The group of a parameter from its name alone: an independent statement of the rules."""
    if kind == "attractor" and name.startswith("head."):
        return "head"
    if name == "embed.weight" or name.endswith(".table.weight"):
        return "embed"
    if p.dim() != 2 or name.endswith(".gate.weight"):
        return "adamw"
    if name == "lm_head.weight" or (kind == "deq" and name == "head.weight"):
        return "adamw"  # untied output projections
    return "muon"


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
        assert found[id(p)]["name"] == expected_group(kind, name, p), name
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["muon"] == 0.02 and lrs["adamw"] == 0.01 and lrs["embed"] == 0.02
    if kind == "attractor":
        assert lrs["head"] == pytest.approx(0.005)
        head = {id(p) for p in model.head.parameters()}
        assert {id(p) for p in next(g for g in groups if g["name"] == "head")["params"]} == head
    for g in groups:
        assert g["base_lr"] == g["lr"]


def test_param_groups_spot_checks():
    """Named examples from DESIGN section 3, so a wrong reference cannot hide a wrong rule."""
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
