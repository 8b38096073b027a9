"""Learning-rate factor over training: linear warm-up, then trapezoid, cosine or constant."""

from __future__ import annotations

import math

from attractor.train.config import ScheduleConfig


def lr_factor(step: int, total: int, cfg: ScheduleConfig) -> float:
    """The multiplier of every group's base learning rate at `step` (0-based) of `total`.

    warm-up:   (step + 1) / warmup_steps for step < warmup_steps
    trapezoid: 1, then linear decay to 0 over the last decay_fraction * total steps
               (the paper's recipe: no warm-up, decay over the last half)
    cosine:    min + (1 - min) * (1 + cos(pi * p)) / 2, p the progress after warm-up
    constant:  1
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.kind == "constant":
        return 1.0
    if cfg.kind == "cosine":
        span = max(total - cfg.warmup_steps, 1)
        p = min((step - cfg.warmup_steps) / span, 1.0)
        return cfg.min_factor + (1.0 - cfg.min_factor) * 0.5 * (1.0 + math.cos(math.pi * p))
    decay_steps = cfg.decay_fraction * total
    decay_start = total - decay_steps
    if step < decay_start or decay_steps == 0:
        return 1.0
    return max(0.0, (total - step) / decay_steps)
