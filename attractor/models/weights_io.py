"""Reading a state dict from disk without running code, and the one checkpoint error.

Two formats carry weights: safetensors (tensors only, by construction) and torch's pickle
(`model.pt`, `pytorch_model.bin`, `model.bin`), which is read with
`torch.load(weights_only=True)`: an unpickler that builds tensors and plain containers and
refuses any other object, so a file that carries code is refused instead of run. Every
failure is one `CheckpointError` line naming the file and what to do.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names the fix."""


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file, on the CPU."""
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({_first_line(e)}); it is truncated "
            "or corrupt: download or save it again"
        ) from None


def read_pickled_state(path: Path) -> dict[str, Tensor]:
    """The state dict in a torch pickle, read with weights_only=True (no code runs)."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise CheckpointError(
                f"{path} carries pickled code or objects other than tensors, and is refused "
                "(loaded with weights_only=True, nothing was run); convert it to safetensors "
                "in a trusted environment, or get the file from its publisher"
            ) from None
        raise _corrupt(path, e) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise _corrupt(path, e) from None
    if isinstance(state, dict) and all(isinstance(v, Tensor) for v in state.values()):
        return state
    raise CheckpointError(
        f"{path} holds a {type(state).__name__} that is not a state dict (name -> tensor); "
        "save model.state_dict() itself"
    )


def read_weights(path: Path) -> dict[str, Tensor]:
    """The tensors of `path`: safetensors by its suffix, else a torch pickle."""
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return read_pickled_state(path)


def _corrupt(path: Path, e: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable torch checkpoint ({_first_line(e)}); it is truncated or "
        "corrupt: download or save it again"
    )


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message (torch's run over several)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
