"""The `attractor` command line: one program, one subcommand per job."""

from __future__ import annotations

import argparse
import sys

from attractor import demo


def _demo(args: argparse.Namespace) -> int:
    demo.main()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attractor",
        description="Attractor Models: fixed-point refinement with implicit gradients.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("demo", help="solve a transformer-block fixed point: Picard vs Anderson")
    p.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
