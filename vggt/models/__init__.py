"""The VGGT model, its aggregator and its configuration."""

from vggt.models.config import PRESETS, VGGTConfig, get_preset
from vggt.models.vggt import VGGT

__all__ = ["PRESETS", "VGGT", "VGGTConfig", "get_preset"]
