"""Training state: everything a run needs to continue exactly, saved atomically.

OUT_DIR/checkpoint.pt holds the model, optimizer, step (which fixes the schedule), EMA
weights, the RNG states, the data position and the run's configuration, so that a run
resumed with a different one is refused (`config_changes`) instead of continuing silently.
It is not an exported model (that is `Model.save_pretrained`, OUT_DIR/model); it is
written by `attractor.core.atomic`, so a process killed mid-save leaves the previous state
intact and loadable. Such a process also leaves the atomic write's temporary file behind
(``.checkpoint.pt.XXXXXXXX.tmp.pt``, as large as the state); one process (rank 0) writes a
run's state, so the next save removes any it finds.
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

# The keys that say how long a run goes, how it is watched and where it runs, not what a
# step computes: a resumed run may change these (train.steps lengthens or shortens the run,
# and with it the schedule, on purpose) and no other.
RESUMABLE_CHANGES = frozenset(
    f"train.{key}"
    for key in (
        "steps", "time_budget_s", "eval_every", "eval_batches", "log_every",
        "checkpoint_every", "max_bad_steps", "device", "strategy", "out_dir", "progress",
        "compile",
    )
)  # fmt: skip


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted key: leaf value}; an empty dict is a leaf."""
    if not isinstance(data, dict) or not data:
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'KEY: SAVED then, NOW now' for each leaf of two `to_data(RunConfig)` records that
    differs, outside RESUMABLE_CHANGES; a key one of them lacks reads as <unset>."""
    old, new = _leaves(saved), _leaves(now)
    return [
        f"{key}: {old.get(key, '<unset>')!r} then, {new.get(key, '<unset>')!r} now"
        for key in sorted(old.keys() | new.keys())
        if key not in RESUMABLE_CHANGES and old.get(key, "<unset>") != new.get(key, "<unset>")
    ]


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
