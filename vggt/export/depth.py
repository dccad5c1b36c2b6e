"""Depth maps as float32 .npy files, 16-bit PNGs in nerfstudio's convention (`vggt.export.trainer`), and colour
previews in a folder of their own (so that no reader mistakes a preview for depth)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from vggt.data.layout import depth_file_stems
from vggt.export.trainer import depth_to_png16, write_png, write_scaled_maps
from vggt.utils.optional import import_cv2

# Inverse depth is scaled between these percentiles of each map, so a few outliers do not wash out the preview.
PREVIEW_PERCENTILES = (2.0, 98.0)


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """[H, W] depth -> [H, W, 3] uint8 RGB preview (turbo colour map on inverse depth: near is red)."""
    cv2 = import_cv2()

    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    inverse = np.zeros_like(depth)
    inverse[valid] = 1.0 / depth[valid]
    if valid.any():
        low, high = np.percentile(inverse[valid], PREVIEW_PERCENTILES)
        scaled = (inverse - low) / max(high - low, np.finfo(np.float32).eps)
    else:
        scaled = inverse
    gray = (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)
    bgr = cv2.applyColorMap(gray, cv2.COLORMAP_TURBO)
    bgr[~valid] = 0
    return np.ascontiguousarray(bgr[..., ::-1])


def write_depth_maps(
    depth_dir: str | Path,
    image_names: Sequence[str],
    depths: Iterable[np.ndarray],
    preview_dir: str | Path | None = None,
    factors: Sequence[int] = (),
) -> list[Path]:
    """Write `depth_dir/<stem>.npy` (float32 [H, W]) and `<stem>.png` (16-bit, value x 1e-3 = depth, 0 = none) for
    each image, `preview_dir/<stem>.png` colour previews (None: no previews), and `<depth_dir>_<f>/<stem>.png`
    copies at 1 / f for each of `factors` (nearest samples).

    `depths` yields one [H, W] (or [H, W, 1]) map per image; the maps may differ in size.
    """
    depth_dir = Path(depth_dir)
    depth_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, depth_map in zip(depth_file_stems(image_names), depths, strict=True):
        depth_map = np.asarray(depth_map, dtype=np.float32)
        if depth_map.ndim == 3 and depth_map.shape[-1] == 1:
            depth_map = depth_map[..., 0]
        if depth_map.ndim != 2:
            raise ValueError(f"each depth map must be [H, W], got {depth_map.shape} for {stem}")
        np.save(depth_dir / f"{stem}.npy", depth_map)
        write_scaled_maps(depth_dir.parent, depth_dir.name, f"{stem}.png", depth_to_png16(depth_map), factors)
        if preview_dir is not None:
            write_png(Path(preview_dir) / f"{stem}.png", colorize_depth(depth_map))
        paths.append(depth_dir / f"{stem}.npy")
    return paths
