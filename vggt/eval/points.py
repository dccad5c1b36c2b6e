"""Point-map metrics: accuracy, completeness and Chamfer distance after a Umeyama Sim(3) alignment.

Predicted and ground-truth point maps are pixel-aligned ([S, H, W, 3] each), so the alignment is a closed-form
least-squares similarity (Umeyama 1991) fitted on the valid pixel correspondences. The distances then ignore
correspondence, as in the DTU and ETH3D protocols:

- accuracy: mean distance from each predicted point to its nearest ground-truth point;
- completeness: mean distance from each ground-truth point to its nearest predicted point;
- chamfer: their average.

Distances are in the ground truth's units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vggt.eval._common import to_numpy
from vggt.utils.similarity import MIN_CORRESPONDENCES, apply_similarity, umeyama

# Nearest-neighbour queries on millions of points are slow; the metrics use a fixed random subset this large.
DEFAULT_MAX_POINTS = 100_000
DEFAULT_SEED = 0


def nearest_distances(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Distance from each query point [N, 3] to its nearest reference point [M, 3]: [N]."""
    from scipy.spatial import cKDTree

    # Ground truth sampled onto a finer grid repeats points many times; exact duplicates change no distance but
    # make k-d tree leaves that cannot be split, so they are removed from both sides first.
    reference = np.unique(reference, axis=0)
    unique_query, inverse = np.unique(query, axis=0, return_inverse=True)
    distances, _ = cKDTree(reference, balanced_tree=False).query(unique_query, k=1)
    return distances[inverse.reshape(-1)]


def _as_point_map(points: Any, name: str) -> np.ndarray:
    p = to_numpy(points, name)
    if p.ndim < 2 or p.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [..., 3] (e.g. [S, H, W, 3]), got {list(p.shape)}")
    return p


def pointmap_metrics(
    pred_points: Any,
    gt_points: Any,
    mask: Any | None = None,
    align: bool = True,
    max_points: int | None = DEFAULT_MAX_POINTS,
    seed: int = DEFAULT_SEED,
) -> dict[str, float]:
    """Accuracy, completeness and Chamfer distance of a predicted point map.

    Args:
        pred_points: [S, H, W, 3] (any [..., 3]) predicted world points, numpy or torch.
        gt_points: ground-truth points of the same shape, pixel-aligned with the prediction.
        mask: optional boolean [S, H, W]; False marks pixels without ground truth. Non-finite points in
            either map are dropped as well.
        align: fit a Umeyama Sim(3) from the prediction to the ground truth on the valid pixels first.
        max_points: evaluate on at most this many valid pixels, drawn with `seed` (None: all).

    Returns:
        {"accuracy", "completeness", "chamfer", "scale" (the fitted scale, 1 without alignment),
        "num_points"}.
    """
    pred = _as_point_map(pred_points, "pred_points")
    gt = _as_point_map(gt_points, "gt_points")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_points {list(pred.shape)} and gt_points {list(gt.shape)} must have the same shape")
    valid = np.isfinite(pred).all(axis=-1) & np.isfinite(gt).all(axis=-1)
    if mask is not None:
        m = to_numpy(mask, "mask") != 0
        if m.shape != valid.shape:
            raise ValueError(f"mask {list(m.shape)} must match the point maps' {list(valid.shape)}")
        valid &= m
    pred, gt = pred[valid], gt[valid]
    if len(pred) < MIN_CORRESPONDENCES:
        raise ValueError(f"only {len(pred)} valid points: need at least {MIN_CORRESPONDENCES} with ground truth")
    if max_points is not None and len(pred) > max_points:
        keep = np.random.default_rng(seed).choice(len(pred), size=max_points, replace=False)
        pred, gt = pred[keep], gt[keep]

    scale = 1.0
    if align:
        scale, rot, trans = umeyama(pred, gt)
        pred = apply_similarity(pred, scale, rot, trans)

    accuracy = float(np.mean(nearest_distances(pred, gt)))
    completeness = float(np.mean(nearest_distances(gt, pred)))
    return {
        "accuracy": accuracy,
        "completeness": completeness,
        "chamfer": (accuracy + completeness) / 2.0,
        "scale": scale,
        "num_points": len(pred),
    }
