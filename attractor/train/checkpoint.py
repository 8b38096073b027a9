"""Training state: everything a run needs to continue exactly, saved atomically.

OUT_DIR/checkpoint.pt holds the model, optimizer, step (which fixes the schedule), EMA
weights, the RNG states and the data position. It is not an exported model (that is
`Model.save_pretrained`, OUT_DIR/model); it is written by `attractor.core.atomic`, so a
process killed mid-save leaves the previous state intact and loadable. Such a process also
leaves the atomic write's temporary file behind (``.checkpoint.pt.XXXXXXXX.tmp.pt``, as
large as the state); one process (rank 0) writes a run's state, so the next save removes
any it finds.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attractor.core.atomic import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"
STALE_TEMPORARIES = f".{CHECKPOINT_NAME}.*.tmp.pt"  # `atomic_path`'s temporary files


def rng_state() -> dict[str, Any]:
    """The state of every random generator a run draws from."""
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore every random generator from `rng_state()`'s record."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(state: dict[str, Any], directory: str | Path) -> Path:
    """Write state to DIRECTORY/checkpoint.pt atomically (temp file, fsync, rename), first
    removing the temporary files of saves that a killed process left behind."""
    path = Path(directory) / CHECKPOINT_NAME
    for stale in path.parent.glob(STALE_TEMPORARIES):
        stale.unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_training_state(directory: str | Path) -> dict[str, Any] | None:
    """The training state in directory, or None when there is none yet."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(
            f"checkpoint: {path} cannot be read ({type(err).__name__}: {err}); "
            "delete it to start over, or restore it from a backup"
        ) from None
