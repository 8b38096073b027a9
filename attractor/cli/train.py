"""`attractor train CONFIG [--set KEY=VALUE ...]`: one run of the shared trainer."""

from __future__ import annotations

import argparse
import gc
import sys


def run(args: argparse.Namespace) -> int:
    """Train from a YAML config or a packaged config name; one line on stderr for bad
    input, no traceback."""
    from attractor.train.config import load_config
    from attractor.train.distributed import teardown_distributed
    from attractor.train.trainer import Trainer

    try:
        cfg = load_config(args.config, args.set)
        trainer = Trainer(cfg)
    except ValueError as err:
        print(f"attractor train: {err}", file=sys.stderr)
        return 2
    row = trainer.fit()
    step, is_main = trainer.step, trainer.info.is_main
    # DDP's reducer goes before the process group, not at interpreter exit, where gloo's
    # release of the last collectives can deadlock (pytorch/pytorch#75097 reports the hang)
    del trainer
    gc.collect()
    teardown_distributed()  # after success only: a failed rank exits, so its peers fail too
    if is_main:
        summary = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
        print(f"done at step {step}: {summary}; checkpoint in {cfg.train.out_dir}")
    return 0
