"""Saving and loading models: a directory with `config.json` and `model.safetensors`.

`config.json` is `model.config_dict()`: {"kind": ..., every config field}, nested config
dataclasses (a model's `FixedPointConfig` and its `SolverConfig`s) as nested objects.
`model.safetensors` holds the persistent state dict, each shared tensor once. Loading
rebuilds the config through the typed loader (`attractor.core.typed_config`) and the
registry of model families, builds the model the one way (`model_from_config`) and loads
the weights strictly. Both files are written atomically (`attractor.core.atomic`). Every
bad checkpoint is one `CheckpointError` (a `ValueError`) saying what is wrong and what to
do.

`load_pretrained` also reads the paper's release format (a config.json with
"_class_name": `attractor.models.reference_format`) and `hf:OWNER/NAME[@REVISION]`, a
repository fetched from the Hugging Face hub into huggingface_hub's usual cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from attractor.core.atomic import atomic_path, atomic_write
from attractor.core.typed_config import ConfigError, from_data, merge, to_data
from attractor.models.reference_format import is_reference_dir, load_reference, reference_config
from attractor.models.registry import KINDS, family, kind_of
from attractor.models.weights_io import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_SHOW = 4  # offending tensor names listed in a mismatch error


# -----------------------------------------------------------------------------
# Shared tensors: one name per storage on disk, every name filled again on load


def _tensor_identity(t: Tensor) -> tuple:
    """Tensors with equal identity are the same memory seen under two names."""
    return (
        str(t.device),
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        t.stride(),
        t.dtype,
    )


def _alias_groups(state: dict[str, Tensor]) -> list[list[str]]:
    """State-dict names grouped by the tensor they name, in state-dict order."""
    groups: dict[tuple, list[str]] = {}
    for name, t in state.items():
        key = ("empty", name) if t.numel() == 0 else _tensor_identity(t)
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def _tensors_to_save(model: nn.Module) -> dict[str, Tensor]:
    """The persistent state dict, each shared tensor once, every tensor contiguous and with
    memory of its own (safetensors refuses tensors that overlap)."""
    state = model.state_dict()
    meta = [name for name, t in state.items() if t.is_meta]
    if meta:
        raise ValueError(
            f"save_pretrained: {meta[0]} (and {len(meta) - 1} more) live on the meta device "
            "and hold no values; build the model on a real device or load weights first"
        )
    out: dict[str, Tensor] = {}
    storages: set[tuple[str, int]] = set()
    for group in _alias_groups(state):
        t = state[group[0]].detach()
        storage = (str(t.device), t.untyped_storage().data_ptr())
        if t.numel() and storage in storages:
            t = t.clone(memory_format=torch.contiguous_format)
        storages.add(storage)
        out[group[0]] = t.contiguous()
    return out


# -----------------------------------------------------------------------------
# Saving


def _config_json(model: nn.Module) -> str:
    try:
        return json.dumps(model.config_dict(), indent=2) + "\n"
    except TypeError as e:
        raise ValueError(
            f"save_pretrained: the {model.kind} config cannot be written as JSON ({e}); "
            "config fields must be numbers, strings, booleans, lists, None or dataclasses"
        ) from None


def save_pretrained(model: nn.Module, directory: str | os.PathLike) -> None:
    """Write `config.json` and `model.safetensors` into `directory` (created if missing).

    Both files are written to temporary names in the directory and renamed over the final
    ones only when both are complete (the weights first), so a failed save leaves no
    partial file (and no directory it created).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"save_pretrained: {directory} is a file; pass a directory path")
    text = _config_json(model)
    tensors = _tensors_to_save(model)
    created = not directory.exists()
    try:
        # exits run inner first: the weights are renamed into place, then the config
        with (
            atomic_write(directory / CONFIG_NAME) as config,
            atomic_path(directory / WEIGHTS_NAME) as weights,
        ):
            save_file(tensors, str(weights), metadata={"format": "pt", "kind": model.kind})
            config.write(text)
    except BaseException:
        if created and directory.exists() and not any(directory.iterdir()):
            directory.rmdir()
        raise


# -----------------------------------------------------------------------------
# Rebuilding the config from JSON


def config_from_dict(data: Any, where: str = CONFIG_NAME) -> Any:
    """The config dataclass described by `data` = {"kind": ..., fields...}."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise CheckpointError(
            f'{where}: expected a JSON object with a "kind" field naming the model family; '
            "save the model again with save_pretrained"
        )
    fields = dict(data)
    kind = fields.pop("kind")
    if kind not in KINDS:
        raise CheckpointError(
            f"{where}: unknown model kind {kind!r} (known: {', '.join(KINDS)}); "
            "update attractor to the version that saved the checkpoint"
        )
    try:
        return from_data(KINDS[kind][1], fields, kind)
    except ConfigError as e:
        raise CheckpointError(f"{where}: {e}; fix config.json or save the model again") from None


# -----------------------------------------------------------------------------
# Loading


def _read_config(directory: Path) -> Any:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{directory} has no {CONFIG_NAME}; pass a directory written by "
            "model.save_pretrained(directory)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
            "repair it or save the model again"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} cannot be read ({e}); check the file") from None
    return config_from_dict(data, str(path))


def _read_weights(directory: Path) -> dict[str, Tensor]:
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{directory} has no {WEIGHTS_NAME}; the save did not finish or the file was "
            "moved: save the model again"
        )
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); it is truncated or corrupt: "
            "save the model again or restore the file"
        ) from None


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else "")


def _check_weights(model: nn.Module, weights: dict[str, Tensor], where: Path) -> None:
    """Strict: every model tensor (any one name of a shared one) present, no extra names,
    every shape equal; else one error listing a few offenders."""
    state = model.state_dict()
    missing = [
        f"{g[0]} {_shape(state[g[0]])}"
        for g in _alias_groups(state)
        if not any(name in weights for name in g)
    ]
    unexpected = [f"{k} {_shape(t)}" for k, t in weights.items() if k not in state]
    mismatched = [
        f"{k} {_shape(weights[k])} in the file, {_shape(t)} in the model"
        for k, t in state.items()
        if k in weights and weights[k].shape != t.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{where / WEIGHTS_NAME} does not match {CONFIG_NAME}: {'; '.join(problems)}; "
            "load weights saved with this config, or restore the config they were saved with"
        )


HUB_PREFIX = "hf:"


def hub_directory(spec: str) -> Path:
    """The local snapshot of `hf:OWNER/NAME[@REVISION]`, downloaded into huggingface_hub's
    cache if it is not there; one CheckpointError line when the hub cannot be reached."""
    repo, _, revision = spec[len(HUB_PREFIX) :].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise CheckpointError(f"{spec}: expected hf:OWNER/NAME or hf:OWNER/NAME@REVISION")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{spec}: loading from the Hugging Face hub needs huggingface_hub; "
            "pip install huggingface_hub, or download the repository and pass its directory"
        ) from None
    try:
        return Path(snapshot_download(repo_id=repo, revision=revision or None))
    except Exception as e:  # offline, unknown repository, refused: one line either way
        raise CheckpointError(
            f"{spec}: cannot fetch {repo} from the Hugging Face hub ({type(e).__name__}); "
            f"download it where the hub is reachable (huggingface-cli download {repo} "
            "--local-dir DIR) and pass that directory instead: attractor ... DIR"
        ) from None


def _source_directory(src: str | os.PathLike) -> Path:
    """The local directory `src` names (a hub id is fetched first); it must exist."""
    directory = hub_directory(str(src)) if str(src).startswith(HUB_PREFIX) else Path(src)
    if not directory.is_dir():
        what = "is a file, not a directory" if directory.exists() else "does not exist"
        raise CheckpointError(
            f"load_pretrained: {directory} {what}; pass the directory that "
            "model.save_pretrained(directory) wrote"
        )
    return directory


def pretrained_config(src: str | os.PathLike) -> Any:
    """The config of the model `src` names (as `load_pretrained` takes it), weights unread."""
    directory = _source_directory(src)
    if not is_reference_dir(directory):
        return _read_config(directory)
    path = directory / CONFIG_NAME
    return reference_config(json.loads(path.read_text(encoding="utf-8")), str(path))


def with_overrides(config: Any, overrides: dict[str, Any], where: str) -> Any:
    """`config` with `overrides` (plain data, nested fields as mappings) deep-merged over
    it, through the typed loader: errors name the keys under `where`."""
    return from_data(type(config), merge(to_data(config), overrides), where)


def load_pretrained_with(
    src: str | os.PathLike, overrides: dict[str, Any], where: str = "model.overrides"
) -> nn.Module:
    """`load_pretrained(src)` in a model built from its config with `overrides` merged over
    it (fine-tuning from imported weights: a run's `model.init_from`). An override that
    changes a weight's shape or the set of weights is one CheckpointError naming it."""
    model = load_pretrained(src)
    config = with_overrides(model.config, overrides, where)
    if config == model.config:
        return model
    changed = family(kind_of(config))[0](config)
    weights, state = model.state_dict(), changed.state_dict()
    if differ := sorted(set(weights) ^ set(state)):
        key = differ[0]
        side = "drop" if key in weights else "add"
        raise CheckpointError(
            f"{where}: these overrides {side} the weight {key} of {src}; fine-tuning keeps "
            "the imported weights, so change only fields that keep them (solver, depth, ...)"
        )
    for key, t in state.items():
        if t.shape != weights[key].shape:
            raise CheckpointError(
                f"{where}: these overrides make {key} {_shape(t)}, but {src} has "
                f"{_shape(weights[key])}; change only fields that keep the weights' shapes"
            )
    changed.load_state_dict(weights)
    return changed


def load_pretrained(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """The model in `directory`, on device `map_location`: our export (`save_pretrained`),
    the paper's release format, or `hf:OWNER/NAME[@REVISION]` (either, from the hub).

    Weights are copied into a model built from `config.json` in the default dtype.
    Raises `CheckpointError` (a ValueError) for any missing, corrupt or mismatched part.
    """
    directory = _source_directory(directory)
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"load_pretrained: bad map_location {map_location!r} ({e})") from None
    if is_reference_dir(directory):
        return load_reference(directory, device)
    config = _read_config(directory)
    weights = _read_weights(directory)
    try:
        with device:
            model = family(kind_of(config))[0](config)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{directory / CONFIG_NAME}: cannot build a {type(config).__name__} model ({e}); "
            "fix config.json"
        ) from None
    _check_weights(model, weights, directory)
    model.load_state_dict(weights, strict=False)  # strictness checked above, aliases allowed
    return model
