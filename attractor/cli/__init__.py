"""The `attractor` command line (layer 7): one program, one subcommand per job.

`attractor.cli.parser` holds every argument; each subcommand's handler lives in its own
module here (demo, presets, train, data, data_puzzles, eval, generate, plot, solve) and is
imported only when that subcommand runs. A handler returns the exit status: 0, or 2 after
one line on stderr for bad input.
"""

from __future__ import annotations

import importlib


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the subcommand's handler."""
    from attractor.cli.parser import build_parser

    args = build_parser().parse_args(argv)
    module, function = args.handler.split(":")
    return getattr(importlib.import_module(module), function)(args)
