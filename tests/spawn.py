"""Start worker processes for a test and fail, rather than hang, if they do not finish."""

from __future__ import annotations

import time

import pytest
import torch.multiprocessing as mp


def run_processes(fn, args: tuple, nprocs: int, timeout: float = 120.0) -> None:
    """mp.spawn(fn, args, nprocs), killing every worker and failing after `timeout` s."""
    context = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(f"{nprocs} worker processes did not finish within {timeout:.0f} s")
