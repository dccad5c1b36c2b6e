"""Camera pose metrics over all frame pairs, as in the VGGSfM and VGGT evaluations (CO3D, RealEstate10K, IMC).

Cameras are camera-from-world extrinsics `[R | t]` (x_cam = R @ x_world + t), [S, 3, 4] or [S, 4, 4], as
numpy arrays or torch tensors. For every pair of frames i < j the relative pose `E_i @ inv(E_j)` (camera j to
camera i) is formed for the prediction and the ground truth and compared:

- rotation error: the angle of `R_rel_pred^T @ R_rel_gt`, in degrees;
- translation error: the angle between the relative translation directions, in degrees, taken as
  `min(angle, 180 - angle)` because the sign of a direction estimated up to scale is ambiguous.

Both are invariant to a global similarity transform (rotation, translation, scale) of either camera set, so no
alignment is needed. All "fraction of pairs" metrics (AUC, RRA, RTA) are reported as percentages, 0 to 100, the
unit of the paper tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vggt.eval._common import to_numpy, to_percent

# Relative translations shorter than this have no direction; their error is set to the worst possible, 90 degrees
# (the reference evaluation gives a zero vector the same 90 degrees).
MIN_TRANSLATION_NORM = 1e-12
# A rotation block further than this from orthonormal (max abs entry of R^T R - I) is not a rotation.
ROTATION_TOLERANCE = 1e-3
WORST_TRANSLATION_ERROR_DEG = 90.0
DEFAULT_AUC_MAX_THRESHOLD = 30
DEFAULT_ACCURACY_THRESHOLDS = (5, 15, 30)


def _as_extrinsics(extrinsics: Any, name: str) -> np.ndarray:
    """Validated float64 [S, 3, 4] camera-from-world matrices."""
    e = to_numpy(extrinsics, name)
    if e.ndim != 3 or e.shape[1:] not in ((3, 4), (4, 4)):
        raise ValueError(f"{name} must have shape [S, 3, 4] or [S, 4, 4], got {list(e.shape)}")
    e = e[:, :3, :4]
    if not np.isfinite(e).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    rot = e[:, :, :3]
    off_orthonormal = np.abs(rot.transpose(0, 2, 1) @ rot - np.eye(3)).max(axis=(1, 2))
    bad = np.flatnonzero((off_orthonormal > ROTATION_TOLERANCE) | (np.linalg.det(rot) < 0))
    if bad.size:
        raise ValueError(
            f"{name}[{bad[0]}] has a rotation block that is not a rotation matrix "
            f"(extrinsics must be camera-from-world [R | t] with R orthonormal, det +1)"
        )
    return e


def frame_pairs(num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) of all pairs i < j, in the order (0, 1), (0, 2), ..., (1, 2), ...: [P] each."""
    return np.triu_indices(num_frames, k=1)


def relative_poses(extrinsics: Any) -> tuple[np.ndarray, np.ndarray]:
    """Relative poses `E_i @ inv(E_j)` for all pairs i < j: rotations [P, 3, 3] and translations [P, 3]."""
    e = _as_extrinsics(extrinsics, "extrinsics")
    i, j = frame_pairs(len(e))
    rot, trans = e[:, :, :3], e[:, :, 3]
    rel_rot = rot[i] @ rot[j].transpose(0, 2, 1)
    rel_trans = trans[i] - np.einsum("pab,pb->pa", rel_rot, trans[j])
    return rel_rot, rel_trans


def rotation_angle_deg(rot_a: np.ndarray, rot_b: np.ndarray) -> np.ndarray:
    """Angle in degrees of `rot_a^T @ rot_b` for rotations [..., 3, 3].

    Computed as atan2(sin, cos) from the skew and trace parts, which stays accurate near 0 and 180 degrees where
    arccos of the trace alone loses precision.
    """
    diff = np.swapaxes(rot_a, -1, -2) @ rot_b
    cos = (np.trace(diff, axis1=-2, axis2=-1) - 1.0) / 2.0
    skew = diff - np.swapaxes(diff, -1, -2)
    sin = np.linalg.norm(np.stack([skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]], axis=-1), axis=-1) / 2.0
    return np.degrees(np.arctan2(sin, cos))


def translation_angle_deg(trans_a: np.ndarray, trans_b: np.ndarray) -> np.ndarray:
    """Sign-agnostic angle in degrees between directions [..., 3]: min(angle, 180 - angle), in [0, 90]."""
    norm_a = np.linalg.norm(trans_a, axis=-1)
    norm_b = np.linalg.norm(trans_b, axis=-1)
    cross = np.linalg.norm(np.cross(trans_a, trans_b), axis=-1)
    dot = np.abs(np.sum(trans_a * trans_b, axis=-1))  # |cos| folds the angle onto [0, 90]
    angle = np.degrees(np.arctan2(cross, dot))
    degenerate = (norm_a < MIN_TRANSLATION_NORM) | (norm_b < MIN_TRANSLATION_NORM)
    return np.where(degenerate, WORST_TRANSLATION_ERROR_DEG, angle)


def relative_pose_errors(pred_extrinsics: Any, gt_extrinsics: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair relative rotation and translation errors in degrees.

    Args:
        pred_extrinsics: predicted camera-from-world [S, 3, 4] or [S, 4, 4].
        gt_extrinsics: ground truth, same shape.

    Returns:
        rot_err_deg [P], trans_err_deg [P] with P = S * (S - 1) / 2, pairs ordered as `frame_pairs(S)`.
    """
    pred = _as_extrinsics(pred_extrinsics, "pred_extrinsics")
    gt = _as_extrinsics(gt_extrinsics, "gt_extrinsics")
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f"pred_extrinsics has {pred.shape[0]} frames but gt_extrinsics has {gt.shape[0]}")
    if pred.shape[0] < 2:
        raise ValueError(f"relative pose errors need at least 2 frames, got {pred.shape[0]}")
    pred_rot, pred_trans = relative_poses(pred)
    gt_rot, gt_trans = relative_poses(gt)
    return rotation_angle_deg(pred_rot, gt_rot), translation_angle_deg(pred_trans, gt_trans)


def _as_errors(rot_err_deg: Any, trans_err_deg: Any) -> tuple[np.ndarray, np.ndarray]:
    rot = to_numpy(rot_err_deg, "rot_err_deg").reshape(-1)
    trans = to_numpy(trans_err_deg, "trans_err_deg").reshape(-1)
    if rot.shape != trans.shape:
        raise ValueError(f"rot_err_deg has {rot.size} pairs but trans_err_deg has {trans.size}")
    if rot.size == 0:
        raise ValueError("no frame pairs to evaluate: give at least 2 frames")
    return rot, trans


def auc_from_errors(rot_err_deg: Any, trans_err_deg: Any, max_threshold: int = DEFAULT_AUC_MAX_THRESHOLD) -> float:
    """The paper's pose AUC@max_threshold, in percent, from per-pair errors in degrees (pairs may be pooled).

    For each integer threshold t = 1, ..., max_threshold, the fraction of pairs whose larger error
    max(rot, trans) is below t; the AUC is the mean of these fractions, times 100. This is the reference's
    histogram with unit bins over [0, max_threshold] followed by a cumulative sum, so the last threshold is
    inclusive (an error of exactly max_threshold counts) and NaN errors count as failures. It is a step
    (left Riemann) approximation of the area under the accuracy curve: errors all at 15 degrees give
    AUC@30 = 15/30 = 50%, errors all at 14.5 give 16/30.
    """
    if int(max_threshold) != max_threshold or max_threshold < 1:
        raise ValueError(f"max_threshold must be a positive integer number of degrees, got {max_threshold}")
    rot, trans = _as_errors(rot_err_deg, trans_err_deg)
    max_err = np.maximum(rot, trans)  # NaN propagates and then fails every comparison
    thresholds = np.arange(1, int(max_threshold) + 1, dtype=np.float64)
    below = max_err[None, :] < thresholds[:, None]
    below[-1] |= max_err == thresholds[-1]
    return to_percent(below.mean(axis=1).mean())


def camera_auc(pred_extrinsics: Any, gt_extrinsics: Any, max_threshold: int = DEFAULT_AUC_MAX_THRESHOLD) -> float:
    """AUC@max_threshold in percent (see `auc_from_errors`) over all frame pairs of one scene."""
    return auc_from_errors(*relative_pose_errors(pred_extrinsics, gt_extrinsics), max_threshold=max_threshold)


def rra_rta_from_errors(
    rot_err_deg: Any, trans_err_deg: Any, thresholds: Sequence[float] = DEFAULT_ACCURACY_THRESHOLDS
) -> dict[str, float]:
    """Relative rotation / translation accuracy: percent of pairs with error below each threshold.

    Returns:
        {"RRA@t": ..., "RTA@t": ...} for each t in `thresholds`, in percent.
    """
    rot, trans = _as_errors(rot_err_deg, trans_err_deg)
    out: dict[str, float] = {}
    for t in thresholds:
        out[f"RRA@{t:g}"] = to_percent(np.mean(rot < t))
        out[f"RTA@{t:g}"] = to_percent(np.mean(trans < t))
    return out


def rra_rta(
    pred_extrinsics: Any, gt_extrinsics: Any, thresholds: Sequence[float] = DEFAULT_ACCURACY_THRESHOLDS
) -> dict[str, float]:
    """RRA@t and RTA@t in percent over all frame pairs of one scene (see `rra_rta_from_errors`)."""
    return rra_rta_from_errors(*relative_pose_errors(pred_extrinsics, gt_extrinsics), thresholds=thresholds)
