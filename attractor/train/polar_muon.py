"""The paper's Muon (optim.name "muon"): Polar Express orthogonalisation, a norm-preserving
second-moment normalisation and cautious weight decay, with its schedules.

This is the Muon half of the MuonAdamW of the paper's code (github jacobfa/Attractor, commit
fcf045f; `tests/data/reference/optimizer/` holds five of its steps). Per 2-D weight p with
gradient g, momentum mu, second-moment decay beta2, learning rate lr, weight decay wd:

    m <- lerp(m, g, 1 - mu)                      momentum buffer
    d = lerp(g, m, mu)                           Nesterov direction (m itself without)
    U = PolarExpress(d)                          about U V^T of d = U S V^T, in bfloat16
    U <- normalise(U)                            per row (tall) / per column (wide), below
    p <- p - lr' U - lr' wd p [U p >= 0],        lr' = lr max(1, rows / cols)^(1/2)

Around it the paper's training loop moves two hyperparameters with the step t of T:
the momentum warms up linearly, mu_t = mu_0 + (mu - mu_0) min(t / t_w, 1) (0.85 -> 0.95
over 300 steps), and the weight decay falls linearly to zero, wd_t = wd (1 - t / T).
`PolarMuon.set_step` applies both.

Polar Express runs in bfloat16, as in the paper's code: its first polynomial (a = 8.2)
magnifies rounding, so a float32 run differs from the paper's updates by about 5 % where
bfloat16 agrees to 0.2 % (tests/train/test_polar_muon.py). Off CUDA each bfloat16 product
is formed from the same bfloat16 operands in float32 and rounded to bfloat16 (what a
bfloat16 GEMM computes, accumulating in float32): a CPU without bfloat16 matrix units
multiplies bfloat16 matrices about 90 times slower (a 1024 x 256 by 256 x 1024 product,
AMD EPYC, 1 thread: 623 ms against 7.0 ms in float32).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from attractor.train.matrix_optimizer import MatrixOptimizer

# Polar Express (Amsel, Persson, Musco, Gower 2025, "The Polar Express: Optimal Matrix Sign
# Methods and Their Application to the Muon Algorithm"): one odd quintic a s + b s^3 + c s^5
# per iteration, each chosen minimax-optimal for the singular values the previous ones leave,
# so that five steps bring every singular value in (0, 1] close to 1. The values are the
# ones the paper's code uses (safety factor 1.02 in the starting normalisation).
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
SECOND_MOMENT_FLOOR = 1e-10  # below this a row's second moment is taken as this


def bf16_matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b of two bfloat16 matrices, rounded to bfloat16: natively on CUDA, elsewhere
    in float32 from the same operands (module docstring)."""
    if a.is_cuda:
        return a @ b
    return (a.float() @ b.float()).to(torch.bfloat16)


def polar_express(G: Tensor, steps: int = 5) -> Tensor:
    """About U V^T of G = U S V^T (m, n), in bfloat16 (Amsel et al. 2025).

    X_0 = G / (1.02 |G|_F + 1e-6); then for each (a, b, c) of the first `steps` coefficients

        X <- a X + X (b A + c A^2),   A = X^T X     (tall, m > n)
        X <- a X + (b A + c A^2) X,   A = X X^T     (otherwise)

    which maps every singular value s to a s + b s^3 + c s^5 and leaves the singular vectors.
    """
    if G.dim() != 2:
        raise ValueError(f"polar_express: expected a matrix, got shape {tuple(G.shape)}")
    if not 1 <= steps <= len(POLAR_EXPRESS_COEFFS):
        raise ValueError(
            f"polar_express: steps must be 1..{len(POLAR_EXPRESS_COEFFS)}, got {steps}"
        )
    X = G.to(torch.bfloat16)
    X = X / (X.norm() * 1.02 + 1e-6)
    tall = X.size(0) > X.size(1)
    for a, b, c in POLAR_EXPRESS_COEFFS[:steps]:
        A = bf16_matmul(X.mT, X) if tall else bf16_matmul(X, X.mT)  # the smaller Gram
        B = b * A + c * bf16_matmul(A, A)
        X = a * X + (bf16_matmul(X, B) if tall else bf16_matmul(B, X))
    return X


def reduced_dim(shape: torch.Size) -> int:
    """The dimension the second moment averages over: the columns of a tall (or square)
    matrix, one statistic a row; the rows of a wide one, one a column."""
    return -1 if shape[0] >= shape[1] else -2


def normalise_second_moment(U: Tensor, v: Tensor, beta2: float) -> Tensor:
    """U divided per row (tall) or per column (wide) by the root of a running mean of its
    squares, rescaled to keep |U|_F (the paper's code; NorMuon's normalisation):

        s = mean(U^2 over the reduced dim),   v <- lerp(v, s, 1 - beta2)   (in place)
        U' = U v^(-1/2) |U|_F / |U v^(-1/2)|_F

    v is the float32 statistic, (m, 1) or (1, n); U' has U's dtype.
    """
    dim = reduced_dim(U.shape)
    s = U.float().square().mean(dim=dim, keepdim=True)  # (m, 1) or (1, n)
    v.lerp_(s, 1.0 - beta2)
    step = v.clamp_min(SECOND_MOMENT_FLOOR).rsqrt()
    norm = (s.sum() * U.size(dim)).sqrt()  # |U|_F
    scaled = (s * U.size(dim) * step.square()).sum().sqrt()  # |U v^(-1/2)|_F
    return U * (step * (norm / scaled.clamp_min(SECOND_MOMENT_FLOOR))).to(U.dtype)


def momentum_at(step: int, start: float, end: float, warmup_steps: int) -> float:
    """mu_t = start + (end - start) min(t / warmup_steps, 1) (the paper's loop: 0.85 to
    0.95 over 300 steps); `end` from the start when warmup_steps is 0."""
    share = 1.0 if warmup_steps == 0 else min(step / warmup_steps, 1.0)
    return start + (end - start) * share


def weight_decay_at(step: int, total: int, weight_decay: float) -> float:
    """wd_t = wd (1 - t / T): linear decay to zero over the run (the paper's loop)."""
    return weight_decay * max(0.0, 1.0 - step / max(total, 1))


class PolarMuon(MatrixOptimizer):
    """The paper's Muon for 2-D weights (module docstring): momentum, Polar Express,
    second-moment normalisation, cautious weight decay; `set_step` moves the momentum and
    weight decay along the paper's schedules (group keys momentum_start, momentum_end,
    momentum_warmup_steps, base_weight_decay)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.02,
        momentum: float = 0.95,
        momentum_start: float | None = None,
        momentum_warmup_steps: int = 0,
        beta2: float = 0.95,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        ns_steps: int = 5,
    ):
        start = momentum if momentum_start is None else momentum_start
        if not (lr >= 0 and weight_decay >= 0 and momentum_warmup_steps >= 0):
            raise ValueError(
                "PolarMuon: need lr, weight_decay and momentum_warmup_steps >= 0, got "
                f"{lr}, {weight_decay}, {momentum_warmup_steps}"
            )
        if not all(0.0 <= x < 1.0 for x in (momentum, start, beta2)):
            raise ValueError(
                f"PolarMuon: momentum, momentum_start and beta2 must lie in [0, 1), got "
                f"{momentum}, {start}, {beta2}"
            )
        if not 1 <= ns_steps <= len(POLAR_EXPRESS_COEFFS):
            raise ValueError(
                f"PolarMuon: ns_steps must be 1..{len(POLAR_EXPRESS_COEFFS)}, got {ns_steps}"
            )
        defaults = dict(
            lr=lr,
            momentum=start,
            momentum_start=start,
            momentum_end=momentum,
            momentum_warmup_steps=momentum_warmup_steps,
            beta2=beta2,
            weight_decay=weight_decay,
            base_weight_decay=weight_decay,
            nesterov=nesterov,
            ns_steps=ns_steps,
        )
        super().__init__(params, defaults)

    def set_step(self, step: int, total: int) -> None:
        """Momentum and weight decay of every group at training step `step` of `total`."""
        for group in self.param_groups:
            group["momentum"] = momentum_at(
                step, group["momentum_start"], group["momentum_end"],
                group["momentum_warmup_steps"],
            )  # fmt: skip
            group["weight_decay"] = weight_decay_at(step, total, group["base_weight_decay"])

    def _update(self, p: Tensor, group: dict[str, Any]) -> None:
        """One step of one weight (module docstring)."""
        state = self.state[p]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p)
            stat_shape = (p.size(0), 1) if reduced_dim(p.shape) == -1 else (1, p.size(1))
            state["second_moment"] = torch.zeros(stat_shape, dtype=torch.float32, device=p.device)
        # mu as a float32 scalar, 1 - mu rounded in float32, as the paper's code keeps it
        mu = torch.tensor(group["momentum"], dtype=torch.float32, device=p.device)
        g, m = p.grad, state["momentum_buffer"]
        m.lerp_(g, 1.0 - mu)
        direction = g.lerp(m, mu) if group["nesterov"] else m
        U = polar_express(direction, group["ns_steps"])  # bfloat16
        U = normalise_second_moment(U, state["second_moment"], group["beta2"])
        lr = group["lr"] * max(1.0, p.size(0) / p.size(1)) ** 0.5
        update = U.to(p.dtype)
        if group["weight_decay"]:
            cautious = (update * p >= 0).to(p.dtype)  # decay only where it agrees with U
            update = update + group["weight_decay"] * cautious * p
        p.sub_(update, alpha=lr)
