"""cameras.json: per image its file name, size, camera-from-world extrinsic and intrinsic at the original resolution."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CAMERA_CONVENTION = (
    "OpenCV: x right, y down, z forward; extrinsic [R | t] maps world to camera (x_cam = R x_world + t); "
    "intrinsic in pixels of the original image, pixel (0, 0) at the centre of the top-left pixel's corner grid as in "
    "the model's depth maps"
)


def cameras_to_dict(
    image_names: Sequence[str],
    image_sizes: np.ndarray,
    extrinsics: np.ndarray,
    intrinsics: np.ndarray,
    extra: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The content of cameras.json; `extra` adds per-image fields (e.g. where the depth map is)."""
    images = []
    for i, name in enumerate(image_names):
        entry: dict[str, Any] = {
            "file_name": str(name),
            "width": int(image_sizes[i][0]),
            "height": int(image_sizes[i][1]),
            "extrinsic": np.asarray(extrinsics[i], dtype=np.float64).tolist(),
            "intrinsic": np.asarray(intrinsics[i], dtype=np.float64).tolist(),
        }
        if extra is not None:
            entry.update(extra[i])
        images.append(entry)
    return {"convention": CAMERA_CONVENTION, "images": images}


def write_cameras_json(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """Write `cameras_to_dict(*args, **kwargs)` to `path`."""
    path = Path(path)
    path.write_text(json.dumps(cameras_to_dict(*args, **kwargs), indent=2) + "\n")
    return path
