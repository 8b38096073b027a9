"""The paper's optimizer (optim.name "muon": attractor/train/polar_muon.py and
`reference_optimizer`) against five steps of the paper's own MuonAdamW
(tests/data/reference/optimizer/), its schedules against their formulas, and its config.

    python tests/train/test_polar_muon.py     # prints the measured differences per tensor
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from attractor.nn import RMSNorm, set_optim_group
from attractor.train.optim import OptimConfig, make_optimizer, reference_groups
from attractor.train.polar_muon import (
    POLAR_EXPRESS_COEFFS,
    PolarMuon,
    bf16_matmul,
    momentum_at,
    normalise_second_moment,
    polar_express,
    weight_decay_at,
)

FIXTURE = Path(__file__).parent.parent / "data" / "reference" / "optimizer"
MUON = ("tall.0", "tall.1", "wide.0")
ADAMW = ("embed", "norm", "head")
STEPS = 5


class SixTensors(nn.Module):
    """The fixture's six tensors, each in the module whose group the reference gives it:
    two tall and one wide hidden matrix (Muon), an embedding and a norm (AdamW), and a
    head matrix (AdamW at lr x 0.5 with weight decay)."""

    def __init__(self, init: dict[str, torch.Tensor]):
        super().__init__()
        self.tall = nn.ModuleList(nn.Linear(32, 64, bias=False) for _ in range(2))
        self.wide = nn.Linear(64, 32, bias=False)
        self.embed = nn.Embedding(100, 32)
        self.norm = RMSNorm(32)
        self.head = set_optim_group(nn.Linear(32, 32, bias=False), "head")
        with torch.no_grad():
            for name, p in self.by_fixture_name().items():
                p.copy_(init[f"init.{name}"])

    def by_fixture_name(self) -> dict[str, nn.Parameter]:
        return {
            "tall.0": self.tall[0].weight, "tall.1": self.tall[1].weight,
            "wide.0": self.wide.weight, "embed": self.embed.weight,
            "norm": self.norm.weight, "head": self.head.weight,
        }  # fmt: skip


def fixture() -> tuple[dict[str, torch.Tensor], dict]:
    hyper = json.loads((FIXTURE / "hyperparameters.json").read_text())
    return load_file(FIXTURE / "steps.safetensors"), hyper


def reference_config(hyper: dict) -> OptimConfig:
    """The fixture's settings; its Muon momentum and weight decay are constant over its
    five steps (no warm-up, no decay: the schedules are the training loop's)."""
    return OptimConfig(
        name="muon",
        lr=hyper["adamw_lr"],
        muon_lr=hyper["muon_lr"],
        betas=tuple(hyper["adamw_betas"]),
        eps=hyper["adamw_eps"],
        momentum=hyper["muon_momentum"],
        momentum_start=hyper["muon_momentum"],
        muon_weight_decay=hyper["muon_wd"],
        muon_beta2=hyper["muon_beta2"],
        ns_steps=hyper["ns_steps"],
        head_lr_scale=hyper["head_lr_scale"],
        head_weight_decay=hyper["head_wd"],
    )


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def measured_differences() -> dict[str, list[float]]:
    """Per tensor and step: AdamW |ours - theirs| / |theirs| of the weights after the step
    (a continuous run); Muon the same of the step's update, each step from the reference's
    weights before it (the orthogonalisation runs in bfloat16)."""
    steps, hyper = fixture()
    model = SixTensors(steps)
    params = model.by_fixture_name()
    opt = make_optimizer(model, reference_config(hyper))
    errors: dict[str, list[float]] = {name: [] for name in params}
    for s in range(STEPS):
        before = {n: steps["init." + n] if s == 0 else steps[f"after{s - 1}.{n}"] for n in params}
        with torch.no_grad():
            for name in MUON:
                params[name].copy_(before[name])
        for name, p in params.items():
            p.grad = steps[f"grad{s}.{name}"].clone()
        opt.step()
        for name, p in params.items():
            theirs = steps[f"after{s}.{name}"]
            if name in MUON:
                errors[name].append(relative(p.detach() - before[name], theirs - before[name]))
            else:
                errors[name].append(relative(p.detach(), theirs))
    return errors


def test_adamw_tensors_match_the_reference_after_every_step():
    errors = measured_differences()
    for name in ADAMW:
        assert max(errors[name]) < 1e-6, (name, errors[name])


def test_muon_updates_match_the_reference_at_every_step():
    errors = measured_differences()
    for name in MUON:
        assert max(errors[name]) < 1e-2, (name, errors[name])


def test_the_groups_are_the_references():
    steps, hyper = fixture()
    model = SixTensors(steps)
    cfg = reference_config(hyper)
    groups = {g["name"]: g for g in reference_groups(model, cfg)}
    assert set(groups) == {"muon", "adamw", "embed", "head"}  # the head has no vectors here
    assert groups["head"]["lr"] == hyper["adamw_lr"] * hyper["head_lr_scale"]
    assert groups["head"]["weight_decay"] == hyper["head_wd"]
    assert groups["adamw"]["weight_decay"] == groups["embed"]["weight_decay"] == 0.0
    assert groups["muon"]["weight_decay"] == hyper["muon_wd"]
    opt = make_optimizer(model, cfg)
    assert isinstance(opt.optimizers["muon"], PolarMuon)
    assert opt.optimizers["adamw"].defaults["eps"] == 1e-10


def test_head_vectors_have_no_weight_decay():
    model = nn.Module()
    model.head = set_optim_group(nn.Linear(8, 8), "head")  # a weight and a bias
    groups = {g["name"]: g for g in reference_groups(model, OptimConfig())}
    assert groups["head"]["params"] == [model.head.weight]
    assert groups["head"]["weight_decay"] == 0.1
    assert groups["head-vectors"]["params"] == [model.head.bias]
    assert groups["head-vectors"]["weight_decay"] == 0.0


# ----------------------------------------------------------------------------- the pieces


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48)])
def test_polar_express_maps_each_singular_value_by_its_polynomials(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).double()
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    X = polar_express(G)
    assert X.dtype == torch.bfloat16
    X = X.double()
    # the same five quintics applied to the singular values, in float64
    s = S / (1.02 * G.norm())
    for a, b, c in POLAR_EXPRESS_COEFFS:
        s = a * s + b * s**3 + c * s**5
    assert s.min() > 0.8 and s.max() < 1.2  # all close to 1
    D = U.mT @ X @ Vh.mT  # diagonal when X keeps G's singular vectors
    err = (torch.diagonal(D) - s).abs()  # bfloat16 noise: measured mean 0.016, max 0.09
    assert err.mean() < 0.03 and err.max() < 0.12, (err.mean(), err.max())
    assert (D - torch.diag(torch.diagonal(D))).norm() < 0.05 * D.norm()


@pytest.mark.parametrize("shape", [(64, 32, 48), (1, 300, 7)])
def test_bf16_matmul_is_a_bfloat16_product(shape):
    m, k, n = shape
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen).bfloat16()
    b = torch.randn(k, n, generator=gen).bfloat16()
    ours, native = bf16_matmul(a, b), a @ b  # native: torch's own bfloat16 GEMM
    assert ours.dtype == torch.bfloat16
    # the same exact product rounded once; a summation order apart, at most one bf16 step
    exact = a.double() @ b.double()
    step = 2.0**-7 * exact.abs()
    assert ((ours.double() - exact).abs() <= step + 1e-30).all()
    assert ((ours.double() - native.double()).abs() <= 2 * step + 1e-30).all()


def test_second_moment_normalisation_keeps_the_norm_and_evens_the_rows():
    U = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    U[0] *= 10.0  # one loud row
    v = torch.zeros(16, 1)
    out = normalise_second_moment(U, v, beta2=0.95)
    rows = U.square().mean(dim=1, keepdim=True)
    torch.testing.assert_close(v, 0.05 * rows)  # v <- lerp(0, s, 1 - beta2)
    expected = U / rows.sqrt()  # v^(-1/2) is proportional to 1 / |row|
    expected = expected * U.norm() / expected.norm()
    torch.testing.assert_close(out, expected)
    assert abs(out.norm() - U.norm()) < 1e-4 * U.norm()
    wide = torch.randn(4, 16)
    vw = torch.zeros(1, 16)
    normalise_second_moment(wide, vw, beta2=0.5)
    torch.testing.assert_close(vw, 0.5 * wide.square().mean(dim=0, keepdim=True))


def test_schedules_match_their_formulas():
    total = 600
    for t in (0, 1, 150, 299, 300, 450, 599, 600):
        mu = 0.85 * (1 - min(t / 300, 1)) + 0.95 * min(t / 300, 1)
        assert momentum_at(t, 0.85, 0.95, 300) == pytest.approx(mu, abs=1e-12)
        assert weight_decay_at(t, total, 0.2) == pytest.approx(0.2 * (total - t) / total)
    assert momentum_at(5, 0.85, 0.95, 0) == 0.95  # no warm-up


def test_set_step_moves_momentum_and_weight_decay_in_every_group():
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.Linear(16, 8, bias=False))
    opt = make_optimizer(model, OptimConfig(name="muon"))
    muon = opt.optimizers["muon"]
    assert muon.param_groups[0]["momentum"] == pytest.approx(0.85)  # before any set_step
    opt.set_step(150, 1000)
    for group in muon.param_groups:
        assert group["momentum"] == pytest.approx(0.90)
        assert group["weight_decay"] == pytest.approx(0.2 * 0.85)
    opt.set_step(1000, 1000)
    assert muon.param_groups[0]["momentum"] == pytest.approx(0.95)
    assert muon.param_groups[0]["weight_decay"] == 0.0


def test_cautious_weight_decay_only_where_it_agrees_with_the_update():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(8, 4))
    start = p.detach().clone()
    opt = PolarMuon([p], lr=0.1, momentum=0.0, weight_decay=0.5, beta2=0.0)
    p.grad = torch.randn(8, 4)
    opt.step()
    U = polar_express(p.grad)
    U = normalise_second_moment(U, torch.zeros(8, 1), 0.0).float()
    lr = 0.1 * 2**0.5  # max(1, 8 / 4)^(1/2)
    expected = start - lr * U - lr * 0.5 * start * (U * start >= 0)
    torch.testing.assert_close(p.detach(), expected)


def test_the_first_step_is_skipped_only_by_the_papers_recipe():
    assert not OptimConfig(name="muon").updates_at(0)
    assert OptimConfig(name="muon").updates_at(1)
    assert OptimConfig(name="muon", skip_first_step=False).updates_at(0)
    assert OptimConfig(name="muon-ns").updates_at(0)


def test_config_errors_are_one_line():
    with pytest.raises(ValueError, match="name 'muon-ns' does not use muon_weight_decay"):
        OptimConfig(name="muon-ns", muon_weight_decay=0.1)
    with pytest.raises(ValueError, match="5 Polar Express steps"):
        OptimConfig(name="muon", ns_steps=6)
    with pytest.raises(ValueError, match="momentum_start"):
        OptimConfig(name="muon", momentum_start=1.0)
    with pytest.raises(ValueError, match="only 2-D"):
        PolarMuon([nn.Parameter(torch.zeros(4))])
    assert OptimConfig(name="muon").eps == 1e-10
    assert OptimConfig(name="muon-ns").eps == OptimConfig(name="adamw").eps == 1e-8


if __name__ == "__main__":
    for name, errs in measured_differences().items():
        kind = "update" if name in MUON else "weights"
        print(
            f"{name:7s} {kind:7s} max {max(errs):.1e}  per step "
            + " ".join(f"{e:.1e}" for e in errs)
        )
