"""Optimizers of the LM recipe (docs/method.md section 4.2): Muon for the 2-D hidden weights,
AdamW for everything else; sign descent for TRM's puzzle embedding.

Read top to bottom: the config, the Newton-Schulz orthogonalisation, the Muon optimizer,
the rules that split a model's parameters into groups, the combined optimizer that
steps Muon and AdamW together, and the paper's optimizer. Three names: "muon" is the
paper's MuonAdamW (`reference_optimizer`, its Muon in `attractor.train.polar_muon`);
"muon-ns" ours, Newton-Schulz Muon + AdamW, which made the README's older -cpu figures (it
measured 1.9-3.0 % worse than "muon"); "adamw" AdamW alone. `make_optimizer` builds the
one a config names.

Groups (each a dict with "name", "params", "lr" and "base_lr" = the lr before any schedule)
come from what each module declares (`attractor.nn.optim_groups`): a parameter belongs to
the group of its nearest enclosing module that declares one, else to its default:
    muon   2-D weights of nn.Linear layers (attention, MLP, looped injection B)
    adamw  norms, gates, biases, every other parameter, and what modules declare "adamw"
           (value-embedding gates, untied output projections); with name="adamw" also the
           muon group's weights
    embed  every nn.Embedding weight, lr x embed_lr_scale
    head   what declares "head" (every parameter of the attractor head), lr x head_lr_scale
    signsgd  what declares "signsgd" (the grid models' puzzle embedding), on `SignSGD` at
           signsgd_lr with its own weight decay
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attractor.core.typed_config import validate
from attractor.nn.optim_groups import declared_group, default_group
from attractor.train.matrix_optimizer import MatrixOptimizer, closure_loss
from attractor.train.polar_muon import POLAR_EXPRESS_COEFFS, PolarMuon

# Quintic Newton-Schulz coefficients (Jordan et al. 2024): a large slope at 0 pulls small
# singular values up fast; the iteration then oscillates in a band around 1 instead of
# converging to exactly 1, which is all Muon needs.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


@dataclass
class OptimConfig:
    # muon: the paper's MuonAdamW (`reference_optimizer`), every config's | muon-ns: ours,
    # Newton-Schulz Muon + AdamW (the older -cpu README figures) | adamw: AdamW for everything
    name: Literal["muon", "muon-ns", "adamw"] = "muon"
    lr: float = 8e-3  # AdamW
    muon_lr: float = 8e-3
    betas: tuple[float, float] = (0.8, 0.95)  # AdamW
    eps: float | None = None  # AdamW; None: 1e-10 for muon (the paper's code), else 1e-8
    # name="muon" only, the paper's values (its code, github jacobfa/Attractor):
    muon_weight_decay: float = 0.2  # cautious, decaying linearly to 0 over the run
    momentum_start: float = 0.85  # Muon momentum warms up linearly to `momentum` ...
    momentum_warmup_steps: int = 300  # ... over these steps
    muon_beta2: float = 0.95  # the per-row / per-column second moment of the update
    head_weight_decay: float = 0.1  # the head's matrices; its vectors have none
    skip_first_step: bool = True  # step 0 computes gradients but leaves the weights
    weight_decay: float = 0.0  # decoupled: every group (muon: the AdamW groups but the head)
    momentum: float = 0.95  # Muon (muon: after the warm-up)
    nesterov: bool = True  # Muon
    ns_steps: int = 5  # Muon's Newton-Schulz iterations (muon: Polar Express, at most 5)
    head_lr_scale: float = 0.5  # the attractor head's AdamW lr = lr x this
    embed_lr_scale: float = 1.0  # embedding tables' AdamW lr = lr x this
    signsgd_lr: float = 1e-2  # the "signsgd" group (TRM's puzzle embedding: 1e-2)
    signsgd_weight_decay: float = 1.0  # decoupled, that group only (TRM: 1.0)

    def __post_init__(self) -> None:
        validate(self)
        if self.eps is None:
            self.eps = 1e-10 if self.name == "muon" else 1e-8
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim: betas must be two numbers in [0, 1), got {self.betas}")
        for field_name in ("lr", "muon_lr", "weight_decay", "head_lr_scale", "embed_lr_scale",
                           "signsgd_lr", "signsgd_weight_decay"):  # fmt: skip
            if getattr(self, field_name) < 0:
                raise ValueError(
                    f"optim: {field_name} must be >= 0, got {getattr(self, field_name)}"
                )
        if self.eps <= 0:
            raise ValueError(f"optim: eps must be > 0, got {self.eps}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"optim: momentum must be in [0, 1), got {self.momentum}")
        if self.ns_steps < 1:
            raise ValueError(f"optim: ns_steps must be >= 1, got {self.ns_steps}")
        check_reference_fields(self)

    def updates_at(self, step: int) -> bool:
        """Whether the optimizer steps at training step `step` (0-based): the paper's loop
        skips the first."""
        return not (step == 0 and self.name == "muon" and self.skip_first_step)


REFERENCE_DEFAULTS = dict(
    muon_weight_decay=0.2, momentum_start=0.85, momentum_warmup_steps=300, muon_beta2=0.95,
    head_weight_decay=0.1, skip_first_step=True,
)  # fmt: skip


def check_reference_fields(cfg: OptimConfig) -> None:
    """The fields of the paper's recipe are in range, and changed only with name="muon"."""
    if cfg.name != "muon":
        changed = [k for k, v in REFERENCE_DEFAULTS.items() if getattr(cfg, k) != v]
        if changed:
            raise ValueError(
                f"optim: name {cfg.name!r} does not use {', '.join(changed)}; only name "
                "'muon' (the paper's recipe) does"
            )
        return
    if cfg.muon_weight_decay < 0 or cfg.head_weight_decay < 0 or cfg.momentum_warmup_steps < 0:
        raise ValueError(
            "optim: muon_weight_decay, head_weight_decay and momentum_warmup_steps must be >= 0"
        )
    if not (0.0 <= cfg.momentum_start < 1.0 and 0.0 <= cfg.muon_beta2 < 1.0):
        raise ValueError(
            f"optim: momentum_start and muon_beta2 must lie in [0, 1), got "
            f"{cfg.momentum_start}, {cfg.muon_beta2}"
        )
    if cfg.ns_steps > len(POLAR_EXPRESS_COEFFS):
        raise ValueError(
            f"optim: name 'muon' has {len(POLAR_EXPRESS_COEFFS)} Polar Express steps, "
            f"got ns_steps={cfg.ns_steps}"
        )


# -----------------------------------------------------------------------------
# Muon


def newton_schulz(G: Tensor, steps: int = 5) -> Tensor:
    """Approximately orthogonalise G (m, n), or a batch (..., m, n): about U V^T of G = U S V^T.

    With X_0 = G / ||G||_F (all singular values in (0, 1]), the quintic iteration

        X <- a X + b (X X^T) X + c (X X^T)^2 X,   (a, b, c) = (3.4445, -4.7750, 2.0315),

    maps each singular value s to a s + b s^3 + c s^5 and leaves the singular vectors alone;
    after 5 steps the singular values lie in a band around 1 (about 0.7 .. 1.2) rather than
    at 1 exactly. A tall matrix is transposed so that X X^T is the smaller Gram matrix. Runs in
    bfloat16 on CUDA and float32 elsewhere; returns G's dtype.
    (Jordan et al. 2024, "Muon: an optimizer for hidden layers in neural networks".)
    """
    if G.dim() < 2:
        raise ValueError(f"newton_schulz: expected a matrix or a batch of them, got {G.dim()}-D")
    a, b, c = NS_COEFFS
    X = G.to(torch.bfloat16 if G.is_cuda else torch.float32)
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT  # (..., n, m): work on the wide side
    X = X / (torch.linalg.matrix_norm(X, keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT  # (..., m, m)
        X = a * X + (b * A + c * (A @ A)) @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)


class Muon(MatrixOptimizer):
    """MomentUm Orthogonalized by Newton-Schulz (Jordan et al. 2024), for 2-D weights only.

        m <- mu m + g
        u = NS(g + mu m) (nesterov) or NS(m),  scaled by max(1, rows / cols)^(1/2)
        p <- p (1 - lr wd) - lr u

    The embeddings, the output projection and the 1-D parameters belong to AdamW.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 8e-3,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.0,
    ):
        if lr < 0 or weight_decay < 0 or not 0.0 <= momentum < 1.0 or ns_steps < 1:
            raise ValueError(
                "Muon: need lr >= 0, weight_decay >= 0, 0 <= momentum < 1 and ns_steps >= 1, "
                f"got {lr}, {weight_decay}, {momentum}, {ns_steps}"
            )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults)

    def _update(self, p: Tensor, group: dict[str, Any]) -> None:
        """One step of one weight (class docstring)."""
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        g, state = p.grad, self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        m = state["momentum_buffer"]
        m.mul_(mu).add_(g)
        direction = g.add(m, alpha=mu) if group["nesterov"] else m
        update = newton_schulz(direction, group["ns_steps"])
        update = update * max(1.0, p.size(0) / p.size(1)) ** 0.5
        if wd:
            p.mul_(1.0 - lr * wd)
        p.add_(update.to(p.dtype), alpha=-lr)


class SignSGD(torch.optim.Optimizer):
    """Sign descent with decoupled weight decay, p <- p (1 - lr wd) - lr sign(g): TRM's
    optimizer for its puzzle embeddings (CastedSparseEmbeddingSignSGD_Distributed, which
    the paper's puzzle code uses at lr 1e-2, wd 1.0). A zero gradient entry moves by decay
    only."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        weight_decay: float = 0.0,
    ):
        if lr < 0 or weight_decay < 0:
            raise ValueError(
                f"SignSGD: need lr >= 0 and weight_decay >= 0, got {lr}, {weight_decay}"
            )
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = closure_loss(closure)
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if wd:
                    p.mul_(1.0 - lr * wd)
                p.add_(torch.sign(p.grad), alpha=-lr)
        return loss


# -----------------------------------------------------------------------------
# Parameter groups


def _groups_of(model: nn.Module) -> Iterator[tuple[Tensor, str]]:
    """(parameter, group) for every trainable parameter once (tied weights once), the group
    declared by its nearest enclosing module or else its default."""
    seen: set[int] = set()
    stack: list[tuple[nn.Module, str | None]] = [(model, declared_group(model))]
    while stack:
        module, inherited = stack.pop()
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                yield p, inherited or default_group(module, name)
        for child in reversed(list(module.children())):
            stack.append((child, declared_group(child) or inherited))


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """The model's trainable parameters split into the groups of the module docstring, each
    parameter exactly once (tied weights count once); empty groups are left out."""
    buckets: dict[str, list[Tensor]] = {
        "muon": [], "adamw": [], "embed": [], "head": [], "signsgd": []
    }  # fmt: skip
    for p, group in _groups_of(model):
        buckets["adamw" if group == "muon" and cfg.name == "adamw" else group].append(p)
    lrs = {
        "muon": cfg.muon_lr,
        "adamw": cfg.lr,
        "embed": cfg.lr * cfg.embed_lr_scale,
        "head": cfg.lr * cfg.head_lr_scale,
        "signsgd": cfg.signsgd_lr,
    }
    return [
        {"name": name, "params": params, "lr": lrs[name], "base_lr": lrs[name]}
        for name, params in buckets.items()
        if params
    ]


# -----------------------------------------------------------------------------
# One optimizer for the whole model


class CombinedOptimizer:
    """AdamW, Muon (names "muon", "muon-ns") and SignSGD (a "signsgd" group) stepped together,
    seen as one optimizer.

    `param_groups` lists every group of both (the same dicts, so setting "lr" on them
    reaches the optimizers); `state_dict()` is {"adamw": ..., "muon": ...}.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]):
        if not optimizers:
            raise ValueError("CombinedOptimizer: no optimizer given (the model has no parameters?)")
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One step of every optimizer; `closure` (re-evaluating the loss) runs once."""
        loss = closure_loss(closure)
        for opt in self.optimizers.values():
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def set_lr_factor(self, factor: float) -> None:
        """lr = base_lr * factor in every group (a schedule's multiplier)."""
        for group in self.param_groups:
            group["lr"] = group["base_lr"] * factor

    def set_step(self, step: int, total: int) -> None:
        """The hyperparameters that follow the training step (PolarMuon's momentum warm-up
        and weight-decay decay) at step `step` of `total`."""
        for opt in self.optimizers.values():
            if isinstance(opt, PolarMuon):
                opt.set_step(step, total)

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != set(self.optimizers):
            raise ValueError(
                f"CombinedOptimizer: state holds optimizers {sorted(state_dict)}, "
                f"this one has {sorted(self.optimizers)}; was it saved with another optim.name?"
            )
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state_dict[name])


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> CombinedOptimizer:
    """AdamW over the adamw/embed/head groups, for cfg.name == "muon-ns" Muon over the
    muon group (docs/method.md section 4.2), and SignSGD over the signsgd group."""
    groups = param_groups(model, cfg)
    adam_groups = [g for g in groups if g["name"] not in ("muon", "signsgd")]
    muon_groups = [g for g in groups if g["name"] == "muon"]
    sign_groups = [g for g in groups if g["name"] == "signsgd"]
    optimizers: dict[str, torch.optim.Optimizer] = {}
    if adam_groups:
        optimizers["adamw"] = torch.optim.AdamW(
            adam_groups,
            lr=cfg.lr,
            betas=cfg.betas,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            fused=False,
        )
    if muon_groups:
        optimizers["muon"] = Muon(
            muon_groups,
            lr=cfg.muon_lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            ns_steps=cfg.ns_steps,
            weight_decay=cfg.weight_decay,
        )
    optimizers.update(_sign_descent(sign_groups, cfg))
    return CombinedOptimizer(optimizers)


def _sign_descent(groups: list[dict[str, Any]], cfg: OptimConfig) -> dict[str, SignSGD]:
    """{"signsgd": SignSGD over the signsgd groups}, or {} when there are none."""
    if not groups:
        return {}
    return {"signsgd": SignSGD(groups, lr=cfg.signsgd_lr, weight_decay=cfg.signsgd_weight_decay)}


# -----------------------------------------------------------------------------
# The paper's optimizer


def reference_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """The groups of `param_groups` with the paper's weight decay: the head split into its
    matrices ("head", head_weight_decay) and its vectors ("head-vectors", none); every
    other AdamW group at cfg.weight_decay; the muon group at cfg.muon_weight_decay."""
    out = []
    for group in param_groups(model, cfg):
        if group["name"] == "signsgd":  # its own decay, `SignSGD`'s
            out.append(group)
            continue
        if group["name"] != "head":
            wd = cfg.muon_weight_decay if group["name"] == "muon" else cfg.weight_decay
            out.append({**group, "weight_decay": wd})
            continue
        for name, params, wd in (
            ("head", [p for p in group["params"] if p.dim() >= 2], cfg.head_weight_decay),
            ("head-vectors", [p for p in group["params"] if p.dim() < 2], 0.0),
        ):
            if params:
                out.append({**group, "name": name, "params": params, "weight_decay": wd})
    return out


def reference_optimizer(model: nn.Module, cfg: OptimConfig) -> CombinedOptimizer:
    """The paper's MuonAdamW (its code, github jacobfa/Attractor; optim.name "muon"):
    PolarMuon over the muon group (momentum warm-up from momentum_start, cautious weight
    decay muon_weight_decay decaying to 0, `CombinedOptimizer.set_step`), AdamW (betas, eps
    1e-10) over the rest with the weight decays of `reference_groups`, and SignSGD over the
    signsgd group."""
    groups = reference_groups(model, cfg)
    adam_groups = [g for g in groups if g["name"] not in ("muon", "signsgd")]
    muon_groups = [g for g in groups if g["name"] == "muon"]
    optimizers: dict[str, torch.optim.Optimizer] = {}
    if adam_groups:
        optimizers["adamw"] = torch.optim.AdamW(
            adam_groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=False
        )
    if muon_groups:
        optimizers["muon"] = PolarMuon(
            muon_groups,
            lr=cfg.muon_lr,
            momentum=cfg.momentum,
            momentum_start=cfg.momentum_start,
            momentum_warmup_steps=cfg.momentum_warmup_steps,
            beta2=cfg.muon_beta2,
            weight_decay=cfg.muon_weight_decay,
            nesterov=cfg.nesterov,
            ns_steps=cfg.ns_steps,
        )
    optimizers.update(_sign_descent([g for g in groups if g["name"] == "signsgd"], cfg))
    return CombinedOptimizer(optimizers)


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> CombinedOptimizer:
    """The optimizer cfg.name names: "muon" `reference_optimizer`, "muon-ns" and "adamw"
    `build_optimizer`."""
    if cfg.name == "muon":
        return reference_optimizer(model, cfg)
    return build_optimizer(model, cfg)
