"""Point-tracking metrics of the TAP-Vid benchmark: average position accuracy, occlusion accuracy, Jaccard.

Shapes follow the model's outputs (frames first): tracks [S, N, 2] as (x, y) pixels, visibility [S, N]. The
TAP-Vid thresholds (1, 2, 4, 8, 16 px) assume 256 x 256 frames: rescale tracks to that size before calling to
compare with published numbers.

- delta_avg (TAP-Vid "< delta^x_avg"): for each threshold, the percent of ground-truth-visible points predicted
  within it (predicted visibility ignored); averaged over thresholds.
- occlusion_accuracy: percent of points whose predicted visibility equals the ground truth.
- average_jaccard: per threshold, true positives / (ground-truth visible + false positives), where a true positive
  is predicted visible, visible and within the threshold, and a false positive is predicted visible but occluded
  or too far; averaged over thresholds.

Points at their own query frame are not evaluated when `query_frames` is given; with query_mode "first" the
frames before each point's first visible frame are skipped as well (TAP-Vid's "first" protocol).

All values are percentages, 0 to 100.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vggt.eval._common import to_numpy, to_percent

TAPVID_THRESHOLDS_PX = (1, 2, 4, 8, 16)
QUERY_MODES = ("strided", "first")


def _evaluation_points(gt_visible: np.ndarray, query_frames: Any | None, query_mode: str) -> np.ndarray:
    """Boolean [S, N]: which (frame, point) entries count."""
    num_frames, num_points = gt_visible.shape
    evaluate = np.ones((num_frames, num_points), dtype=bool)
    if query_frames is not None:
        q = to_numpy(query_frames, "query_frames").reshape(-1)
        if q.shape != (num_points,):
            raise ValueError(f"query_frames must have one frame index per point ({num_points}), got {q.size}")
        q = np.round(q).astype(np.int64)
        if (q < 0).any() or (q >= num_frames).any():
            raise ValueError(f"query_frames must lie in [0, {num_frames - 1}]")
        evaluate[q, np.arange(num_points)] = False
    if query_mode == "first":
        first_visible = np.argmax(gt_visible, axis=0)  # 0 when never visible: nothing is skipped
        evaluate &= np.arange(num_frames)[:, None] >= first_visible[None, :]
    return evaluate


def tapvid_metrics(
    pred_tracks: Any,
    gt_tracks: Any,
    gt_visible: Any,
    pred_visible: Any | None = None,
    query_frames: Any | None = None,
    query_mode: str = "strided",
    thresholds: Sequence[float] = TAPVID_THRESHOLDS_PX,
) -> dict[str, float]:
    """TAP-Vid metrics for one video.

    Args:
        pred_tracks: [S, N, 2] predicted (x, y) pixel positions, numpy or torch.
        gt_tracks: [S, N, 2] ground-truth positions.
        gt_visible: [S, N] boolean, True where the point is visible.
        pred_visible: [S, N] predicted visibility (boolean, or probabilities thresholded at 0.5). Without it only
            the position accuracy is computed.
        query_frames: optional [N] frame index of each point's query, excluded from the evaluation.
        query_mode: "strided" or "first" (see the module docstring).
        thresholds: pixel thresholds.

    Returns:
        {"delta_avg", "pts_within_{t}" for each t, and with `pred_visible`: "occlusion_accuracy",
        "average_jaccard", "jaccard_{t}"}; all percentages.
    """
    if query_mode not in QUERY_MODES:
        raise ValueError(f"unknown query_mode {query_mode!r}; choose one of {QUERY_MODES}")
    pred = to_numpy(pred_tracks, "pred_tracks")
    gt = to_numpy(gt_tracks, "gt_tracks")
    if pred.ndim != 3 or pred.shape[-1] != 2 or pred.shape != gt.shape:
        raise ValueError(f"pred_tracks and gt_tracks must both be [S, N, 2], got {list(pred.shape)}, {list(gt.shape)}")
    visible = to_numpy(gt_visible, "gt_visible") > 0.5
    if visible.shape != gt.shape[:2]:
        raise ValueError(f"gt_visible must be [S, N] = {list(gt.shape[:2])}, got {list(visible.shape)}")

    evaluate = _evaluation_points(visible, query_frames, query_mode)
    num_visible = np.sum(visible & evaluate)
    if num_visible == 0:
        raise ValueError("no ground-truth-visible points to evaluate")

    squared_dist = np.sum((pred - gt) ** 2, axis=-1)
    within = {t: squared_dist < float(t) ** 2 for t in thresholds}
    metrics: dict[str, float] = {}
    for t in thresholds:
        metrics[f"pts_within_{t:g}"] = to_percent(np.sum(within[t] & visible & evaluate) / num_visible)
    metrics["delta_avg"] = float(np.mean([metrics[f"pts_within_{t:g}"] for t in thresholds]))

    if pred_visible is not None:
        pred_vis = to_numpy(pred_visible, "pred_visible") > 0.5
        if pred_vis.shape != visible.shape:
            raise ValueError(f"pred_visible must be [S, N] = {list(visible.shape)}, got {list(pred_vis.shape)}")
        metrics["occlusion_accuracy"] = to_percent(np.sum((pred_vis == visible) & evaluate) / np.sum(evaluate))
        for t in thresholds:
            true_pos = np.sum(within[t] & visible & pred_vis & evaluate)
            false_pos = np.sum(pred_vis & (~visible | ~within[t]) & evaluate)
            metrics[f"jaccard_{t:g}"] = to_percent(true_pos / (num_visible + false_pos))
        metrics["average_jaccard"] = float(np.mean([metrics[f"jaccard_{t:g}"] for t in thresholds]))
    return metrics
