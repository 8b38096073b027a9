"""The models (layer 3): language models, grid-puzzle models, their presets and checkpoints.

Importing this package imports every model module, so every family is in the registry
(`attractor.models.registry`) before any code of the package looks one up.
"""

from attractor.models import (  # noqa: F401  (each registers its family)
    attractor,
    deq,
    gpt,
    grid_attractor,
    grid_transformer,
    looped,
    reasoner,
    reasoner_nested,
    trm,
)
from attractor.models.base import Model
from attractor.models.grid import GridModel, GridOutput
from attractor.models.language_model import LanguageModel, ModelOutput
from attractor.models.presets import (
    PRESETS,
    build_model,
    config_with,
    list_presets,
    make_config,
    model_from_config,
    preset_config,
)
from attractor.models.pretrained import (
    CheckpointError,
    load_pretrained,
    load_pretrained_with,
    pretrained_config,
    save_pretrained,
)
from attractor.models.registry import KINDS, family

__all__ = [
    "KINDS",
    "PRESETS",
    "CheckpointError",
    "GridModel",
    "GridOutput",
    "LanguageModel",
    "Model",
    "ModelOutput",
    "build_model",
    "config_with",
    "family",
    "list_presets",
    "load_pretrained",
    "load_pretrained_with",
    "make_config",
    "model_from_config",
    "preset_config",
    "pretrained_config",
    "save_pretrained",
]
