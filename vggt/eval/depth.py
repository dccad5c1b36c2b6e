"""Depth metrics: AbsRel and delta < 1.25 after a per-frame scale alignment.

A feed-forward reconstruction is defined up to scale, so each predicted depth map is first scaled to the ground
truth on the frame's valid pixels (`alignment`):

- "median": s = median(gt) / median(pred), the usual monocular-depth protocol;
- "lstsq": s = argmin_s ||s * pred - gt||^2 = <pred, gt> / <pred, pred>;
- "none": s = 1, for metric predictions.

Valid pixels: finite ground truth > 0, and the optional mask. Metrics are computed per frame and averaged over the
frames that have valid pixels. AbsRel = mean |s * pred - gt| / gt (a ratio); delta < 1.25 = percent of pixels with
max(s * pred / gt, gt / (s * pred)) < 1.25 (a non-positive prediction never counts).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vggt.eval._common import to_numpy, to_percent

DEPTH_ALIGNMENTS = ("median", "lstsq", "none")
DELTA_THRESHOLD = 1.25


def _as_depth_stack(depth: Any, name: str) -> np.ndarray:
    """Depth as float64 [S, H, W] from [H, W], [S, H, W] or [S, H, W, 1]."""
    d = to_numpy(depth, name)
    if d.ndim == 4 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim == 2:
        d = d[None]
    if d.ndim != 3:
        raise ValueError(f"{name} must have shape [H, W], [S, H, W] or [S, H, W, 1], got {list(d.shape)}")
    return d


def depth_scale(pred: np.ndarray, gt: np.ndarray, alignment: str = "median") -> float:
    """The scale s that aligns `pred` to `gt` (1-d arrays of valid pixels) by `alignment`.

    A prediction that cannot be scaled (zero or negative median or energy) gets s = 0: it then scores as a
    total failure rather than being dropped.
    """
    if alignment not in DEPTH_ALIGNMENTS:
        raise ValueError(f"unknown depth alignment {alignment!r}; choose one of {DEPTH_ALIGNMENTS}")
    if alignment == "none":
        return 1.0
    if alignment == "median":
        numerator, denominator = np.median(gt), np.median(pred)
    else:
        numerator, denominator = np.dot(pred, gt), np.dot(pred, pred)
    if not np.isfinite(denominator) or denominator <= 0:
        return 0.0
    return float(numerator / denominator)


def depth_metrics(
    pred_depth: Any, gt_depth: Any, mask: Any | None = None, alignment: str = "median"
) -> dict[str, float]:
    """AbsRel and delta < 1.25 averaged over frames, after per-frame scale alignment.

    Args:
        pred_depth: [S, H, W] (or [H, W], [S, H, W, 1]) predicted depth, numpy or torch.
        gt_depth: ground truth of the same size; values <= 0 or non-finite are invalid.
        mask: optional [S, H, W] boolean; False marks pixels to ignore.
        alignment: "median", "lstsq" or "none" (see the module docstring).

    Returns:
        {"abs_rel": ratio, "delta_1.25": percent, "num_frames": frames with valid pixels}.
    """
    pred = _as_depth_stack(pred_depth, "pred_depth")
    gt = _as_depth_stack(gt_depth, "gt_depth")
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred_depth {list(pred.shape)} and gt_depth {list(gt.shape)} differ in shape: "
            "resample one to the other's resolution first"
        )
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(gt) & (gt > 0)
    if mask is not None:
        m = _as_depth_stack(mask, "mask") != 0
        if m.shape != gt.shape:
            raise ValueError(f"mask {list(m.shape)} must match the depth shape {list(gt.shape)}")
        valid &= m

    abs_rel, delta = [], []
    for frame_pred, frame_gt, frame_valid in zip(pred, gt, valid):
        if not frame_valid.any():
            continue
        g = frame_gt[frame_valid]
        p = np.nan_to_num(frame_pred[frame_valid], nan=0.0, posinf=0.0, neginf=0.0)  # non-finite: a failure
        p = p * depth_scale(p, g, alignment)
        abs_rel.append(np.mean(np.abs(p - g) / g))
        positive = p > 0
        ratio = np.full_like(p, np.inf)
        ratio[positive] = np.maximum(p[positive] / g[positive], g[positive] / p[positive])
        delta.append(np.mean(ratio < DELTA_THRESHOLD))

    if not abs_rel:
        raise ValueError("no valid ground-truth depth: every pixel is masked, zero, negative or non-finite")
    return {
        "abs_rel": float(np.mean(abs_rel)),
        f"delta_{DELTA_THRESHOLD:g}": to_percent(np.mean(delta)),
        "num_frames": len(abs_rel),
    }
