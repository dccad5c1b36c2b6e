"""The VGGT family: the VGGT model and its configuration, and the registry of every model by name (imported on
first use: `vggt.utils.lazy`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vggt.utils.lazy import lazy_attributes

if TYPE_CHECKING:
    from vggt.models.build import build_model
    from vggt.models.config import DEFAULT_CHECKPOINT, PRESETS, VGGTConfig, get_preset
    from vggt.models.registry import create_model, list_models
    from vggt.models.vggt import VGGT

_ORIGINS = {
    "DEFAULT_CHECKPOINT": "vggt.models.config",
    "PRESETS": "vggt.models.config",
    "VGGT": "vggt.models.vggt",
    "VGGTConfig": "vggt.models.config",
    "build_model": "vggt.models.build",
    "create_model": "vggt.models.registry",
    "list_models": "vggt.models.registry",
    "get_preset": "vggt.models.config",
}
__getattr__, __dir__ = lazy_attributes(__name__, _ORIGINS)
__all__ = [
    "DEFAULT_CHECKPOINT",
    "PRESETS",
    "VGGT",
    "VGGTConfig",
    "build_model",
    "create_model",
    "get_preset",
    "list_models",
]
