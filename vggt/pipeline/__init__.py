"""Photos or a video in, cameras, depth and a point cloud out: `vggt.reconstruct` and `Reconstruction`.

    from vggt import reconstruct
    rec = reconstruct("photos/", checkpoint="facebook/VGGT-1B")
    rec.save("out/")          # COLMAP model, PLY, GLB, depth maps, cameras.json, predictions.npz
    rec.to_ply("points.ply")

The implementation lives in `vggt.pipeline.core` and is imported on first use, so that `vggt --help`
does not pay for importing torch; `vggt.pipeline.options` holds the choices and defaults.
"""

from __future__ import annotations

import importlib
from typing import Any

from vggt.pipeline.options import (
    DEFAULT_CHECKPOINT,
    DEFAULT_CONF_PERCENTILE,
    DEFAULT_MAX_POINTS,
    DEVICE_CHOICES,
    DTYPE_CHOICES,
    MODES,
    POINT_SOURCES,
)

__all__ = [
    "DEFAULT_CHECKPOINT",
    "DEFAULT_CONF_PERCENTILE",
    "DEFAULT_MAX_POINTS",
    "DEVICE_CHOICES",
    "DTYPE_CHOICES",
    "MODES",
    "POINT_SOURCES",
    "InputError",
    "Reconstruction",
    "check_output_dir",
    "collect_inputs",
    "depth_at_original_resolution",
    "load_model",
    "reconstruct",
    "select_points",
    "tracked_points",
]


def __getattr__(name: str) -> Any:
    core = importlib.import_module("vggt.pipeline.core")
    try:
        return getattr(core, name)
    except AttributeError:
        raise AttributeError(f"module 'vggt.pipeline' has no attribute {name!r}") from None
