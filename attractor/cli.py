"""The `attractor` command line: one program, one subcommand per job."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

import torch

from attractor import demo, evaluate, generate, plots, presets, solve_cli
from attractor.data import puzzle_cli
from attractor.data import text as text_data
from attractor.models.grid import GridConfig, mlp_hidden
from attractor.solvers import SolverConfig


def _demo(args: argparse.Namespace) -> int:
    if args.which == "solver":
        demo.solver_demo()
        return 0
    try:
        demo.sudoku_demo(args.data, args.out, args.minutes)
    except (ValueError, OSError) as err:
        print(f"attractor demo: {err}", file=sys.stderr)
        return 2
    return 0


def _count(n: int) -> str:
    """143_100_000 -> "143.1M", 1_330_000_000 -> "1.33B"."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}K"


_LAYER_FIELDS = ("n_layers", "n_backbone", "n_head_layers", "n_prelude", "n_recurrent", "n_coda")


def _describe(kind: str, config: Any) -> str:
    """A short layout from whichever common shape fields the config has:
    "gpt 6x768 h6 ffn3072", "attractor 7+1x1024 h8 ffn4096 anderson T6-64 tol0.0003"."""
    fields = [f.name for f in dataclasses.fields(config)]
    dim, heads = getattr(config, "dim", None), getattr(config, "n_heads", None)
    layers = "+".join(str(getattr(config, f)) for f in _LAYER_FIELDS if f in fields)
    parts = [kind]
    if layers or dim:
        parts.append(f"{layers}x{dim}" if layers and dim else layers or f"d{dim}")
    if heads:
        parts.append(f"h{heads}")
    ratio = getattr(config, "mlp_ratio", None)
    if dim and ratio:
        mlp = getattr(config, "mlp", "relu2")
        width = mlp_hidden(config) if isinstance(config, GridConfig) else int(ratio * dim)
        parts.append(f"ffn{width}" + ("" if mlp == "relu2" else f" {mlp}"))
    solvers = [getattr(config, f) for f in fields if isinstance(getattr(config, f), SolverConfig)]
    if solvers:
        s = getattr(config, "eval_solver", solvers[0])
        parts.append(f"{s.method} T{s.min_iter}-{s.max_iter} tol{s.tol:g}")
    return " ".join(parts)


def _preset_row(name: str) -> list[str]:
    """name, parameters, non-embedding parameters, layout; built on the meta device (no
    memory, no initialisation cost)."""
    config = presets.preset_config(name)
    kind = presets.PRESETS[name][0]
    with torch.device("meta"):
        model = presets.model_from_config(config)
    return [
        name,
        _count(model.num_params()),
        _count(model.num_params(non_embedding=True)),
        _describe(kind, config),
    ]


def _presets(args: argparse.Namespace) -> int:
    rows, failed = [["preset", "params", "non-embed", "layout"]], 0
    for name in presets.list_presets():
        try:
            rows.append(_preset_row(name))
        except (ValueError, TypeError, RuntimeError, NotImplementedError) as e:
            rows.append([name, "?", "?", f"cannot build: {e}"])
            failed += 1
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2])]
        print("  ".join([*cells, row[3]]))
    return 1 if failed else 0


def _train(args: argparse.Namespace) -> int:
    """Train from a YAML config; one line on stderr for bad input, no traceback."""
    from attractor.config import load_config
    from attractor.train.distributed import teardown_distributed
    from attractor.train.trainer import Trainer

    try:
        cfg = load_config(args.config, args.set)
        trainer = Trainer(cfg)
    except ValueError as err:
        print(f"attractor train: {err}", file=sys.stderr)
        return 2
    try:
        row = trainer.fit()
    finally:
        teardown_distributed()
    if trainer.info.is_main:
        summary = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
        print(f"done at step {trainer.step}: {summary}; checkpoint in {cfg.train.out_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attractor",
        description="Attractor Models: fixed-point refinement with implicit gradients.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "demo", help="learn 6x6 Sudoku on CPU (default), or `demo solver`: Picard vs Anderson"
    )
    p.add_argument("which", nargs="?", choices=("sudoku", "solver"), default="sudoku")
    p.add_argument("--minutes", type=float, default=10.0, help="training budget (default 10)")
    p.add_argument("--data", default="data/sudoku6", help="where the puzzle split goes")
    p.add_argument("--out", default="runs/demo-sudoku6", help="run directory")
    p.set_defaults(run=_demo)
    p = sub.add_parser("presets", help="list the model presets: parameter counts and layout")
    p.set_defaults(run=_presets)
    p = sub.add_parser("train", help="train a model from a YAML config (torchrun for many GPUs)")
    p.add_argument("config", nargs="?", help="a YAML file from configs/ (defaults if omitted)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.steps=200 (repeatable)",
    )
    p.set_defaults(run=_train)
    p = sub.add_parser("data", help="prepare datasets: text corpora or puzzle splits")
    data_kinds = p.add_subparsers(dest="data_command", metavar="KIND", required=True)
    text_data.add_cli(data_kinds)
    puzzle_cli.add_cli(data_kinds)
    evaluate.add_eval_parser(sub)
    generate.add_generate_parser(sub)
    plots.add_plot_parser(sub)
    solve_cli.add_solve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
