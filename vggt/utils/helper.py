"""Small numpy helpers of the reference's COLMAP demo: capped random masks and per-frame pixel grids."""

from __future__ import annotations

import numpy as np


def randomly_limit_trues(mask: np.ndarray, max_trues: int) -> np.ndarray:
    """Keep at most `max_trues` True entries of a boolean mask, chosen uniformly at random.

    The choice draws from numpy's global generator (`np.random.choice` without replacement), so a script that
    seeds `np.random` gets the reference's selection.

    Args:
        mask: boolean array of any shape, e.g. [S, H, W].
        max_trues: the most True entries to keep.

    Returns:
        A boolean array of the same shape with min(count, max_trues) True entries.
    """
    flat = np.asarray(mask).reshape(-1)
    true_indices = np.flatnonzero(flat)
    if true_indices.size <= max_trues:
        return np.asarray(mask)
    kept = np.random.choice(true_indices, size=max_trues, replace=False)
    limited = np.zeros_like(flat, dtype=bool)
    limited[kept] = True
    return limited.reshape(np.shape(mask))


def create_pixel_coordinate_grid(num_frames: int, height: int, width: int) -> np.ndarray:
    """[S, H, W, 3] float32 grid of `(x, y, frame index)` for every pixel of `num_frames` frames.

    x is the column and y the row of the pixel (pixel centres at integer coordinates).
    """
    rows, cols = np.indices((height, width), dtype=np.float32)
    frames = np.arange(num_frames, dtype=np.float32)[:, None, None]
    shape = (num_frames, height, width)
    return np.stack(
        (np.broadcast_to(cols, shape), np.broadcast_to(rows, shape), np.broadcast_to(frames, shape)), axis=-1
    )
