"""VGGT: feed-forward cameras, depth, point maps and tracks from one to hundreds of images."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names, imported on first use so that `import vggt` stays cheap (the CLI starts fast).
_LAZY = {
    "VGGT": "vggt.models.vggt",
    "VGGTConfig": "vggt.models.config",
    "get_preset": "vggt.models.config",
    "reconstruct": "vggt.pipeline",
    "Reconstruction": "vggt.pipeline",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vggt' has no attribute {name!r}")
