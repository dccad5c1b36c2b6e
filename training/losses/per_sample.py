"""The per-sample recipe (`loss.averaging: per_sample`): the paper's formulas, every term averaged per sample.

    L = w_cam L_camera + w_depth L_depth + w_point L_pmap + w_track L_track        (w_track = 0.05)

- L_camera: L1 between predicted and ground-truth 9-d pose encodings, for every refinement
  iteration i of n, weighted gamma^(n-1-i) so that later iterations count more.
- L_depth, L_pmap: aleatoric-uncertainty regression, per valid pixel
  `gamma C ||pred - gt|| + C ||grad pred - grad gt|| - alpha log C`, with C the predicted confidence (>= 1)
  and the gradient term weighted by `gradient_weight`.
- L_track: ours (`training.losses.tracks`).

Every term is averaged per sample first, then over the samples of the batch, so that a global batch gives
the same loss however it is split over processes. Unlike the reference recipe (`training.losses.reference`)
there is no quantile filtering of outliers, no clamping, a single-scale gradient term, and the plain
regression error is logged but not added to the objective.

Ground truth is expressed in the first camera's frame and divided by the mean distance of its valid
3D points to that camera (`normalize_ground_truth`); predictions are used as they are. A term whose
ground truth the batch lacks (no depth, no valid pixel) is left out of the sum and out of the logged
terms, never replaced by a made-up zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from training.losses.base import TrainingLoss
from training.losses.config import CameraLossConfig, DenseLossConfig, LossConfig
from training.losses.normalization import camera_centre_scale
from training.losses.reduction import iteration_weights, per_sample_mean
from vggt.utils.geometry import as_homogeneous, closed_form_inverse_se3, depth_map_to_world_points
from vggt.utils.pose_enc import extri_intri_to_pose_encoding

# Slices of the 9-d `absT_quaR_FoV` encoding.
TRANSLATION_DIMS = slice(0, 3)
ROTATION_DIMS = slice(3, 7)
FOCAL_DIMS = slice(7, 9)
# Scales below this (a degenerate scene) are replaced by 1 rather than divided by.
MIN_SCENE_SCALE = 1e-6
DENSE_PREDICTIONS = {"depth": "depth", "point": "world_points"}  # term -> prediction key (its confidence: + "_conf")
NO_TERM_MESSAGE = (
    "no loss term could be computed: the batch has no usable ground truth for the model's enabled heads "
    "(cameras need 'extrinsics' and 'intrinsics'; depth and point maps need 'depths' with valid pixels)"
)


# -------------------------------------------------------------------------------- ground truth


def normalize_ground_truth(
    extrinsics: Tensor, intrinsics: Tensor, depths: Tensor | None, valid: Tensor | None
) -> dict[str, Tensor]:
    """Move ground truth into the first camera's frame and divide lengths by the scene scale.

    The scale is the mean distance of the valid 3D points (unprojected depth) to the first camera.
    For a sample without depth (or without a valid pixel) it is the mean distance of the other cameras'
    centres to the first one.

    Args:
        extrinsics: [B, S, 3, 4] camera-from-world.
        intrinsics: [B, S, 3, 3].
        depths: [B, S, H, W] or None.
        valid: [B, S, H, W] bool, pixels whose depth may be used (None: depth > 0).

    Returns:
        dict with `extrinsics` [B, S, 3, 4] (first camera = identity), `scale` [B], and with depth
        `depths` [B, S, H, W], `world_points` [B, S, H, W, 3], `valid` [B, S, H, W].
    """
    extrinsics = extrinsics.float()
    intrinsics = intrinsics.float()
    first_to_world = closed_form_inverse_se3(extrinsics[:, 0])  # [B, 4, 4]
    relative = (as_homogeneous(extrinsics) @ first_to_world[:, None])[..., :3, :]  # cam_s-from-cam_0
    out: dict[str, Tensor] = {}
    scale = camera_centre_scale(relative)
    if depths is not None:
        depths = depths.float()
        valid = (depths > 0) if valid is None else (valid.bool() & (depths > 0))
        valid = valid & torch.isfinite(depths)
        depths = torch.where(valid, depths, torch.zeros_like(depths))
        points = depth_map_to_world_points(depths, relative, intrinsics)  # in the first camera's frame
        count = valid.flatten(1).sum(dim=1)
        total = (points.norm(dim=-1) * valid).flatten(1).sum(dim=1)
        # Samples of the batch without a single valid pixel keep the camera-centre scale.
        scale = torch.where(count > 0, total / count.clamp(min=1), scale)
    scale = torch.where(torch.isfinite(scale) & (scale > MIN_SCENE_SCALE), scale, torch.ones_like(scale))

    relative = torch.cat((relative[..., :3], relative[..., 3:] / scale[:, None, None, None]), dim=-1)
    out["extrinsics"] = relative
    out["scale"] = scale
    if depths is not None:
        out["depths"] = depths / scale[:, None, None, None]
        out["world_points"] = points / scale[:, None, None, None, None]
        out["valid"] = valid
    return out


# --------------------------------------------------------------------------------------- terms


def camera_loss(
    pose_enc_list: Sequence[Tensor], gt_pose_enc: Tensor, config: CameraLossConfig, frame_valid: Tensor | None = None
) -> dict[str, Tensor]:
    """L1 on translation, rotation quaternion and field of view, over all refinement iterations.

    Args:
        pose_enc_list: n tensors [B, S, 9], one per camera-head iteration.
        gt_pose_enc: [B, S, 9].
        frame_valid: optional [B, S] bool, frames to supervise.

    Returns:
        `camera` (the weighted sum), `camera_T`, `camera_R`, `camera_FL`, each averaged over iterations.
    """
    weights = iteration_weights(len(pose_enc_list), config.gamma)
    if frame_valid is None:
        frame_valid = torch.ones(gt_pose_enc.shape[:2], dtype=torch.bool, device=gt_pose_enc.device)
    gt = gt_pose_enc[frame_valid]
    parts = {"camera_T": TRANSLATION_DIMS, "camera_R": ROTATION_DIMS, "camera_FL": FOCAL_DIMS}
    totals = {name: gt.new_zeros(()) for name in parts}
    for weight, pose_enc in zip(weights, pose_enc_list):
        error = (pose_enc.float()[frame_valid] - gt).abs()  # [V, 9]
        for name, dims in parts.items():
            totals[name] = totals[name] + weight * error[:, dims].mean()
    terms = {name: total / len(weights) for name, total in totals.items()}
    terms["camera"] = (
        config.weight_trans * terms["camera_T"]
        + config.weight_rot * terms["camera_R"]
        + config.weight_focal * terms["camera_FL"]
    )
    return terms


def confidence_regression_loss(
    pred: Tensor, gt: Tensor, conf: Tensor, valid: Tensor, alpha: float, gamma: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Aleatoric regression of dense maps with its gradient term.

    Per valid pixel p: `gamma C_p ||pred_p - gt_p|| - alpha log C_p`; per pair of horizontally or
    vertically adjacent valid pixels (p, q), q right of / below p: `C_q ||(pred_q - gt_q) - (pred_p - gt_p)||`,
    i.e. C times the error of the finite-difference gradient. Both sums are divided by the sample's
    number of valid pixels, then averaged over the samples that have any (`per_sample_mean`).

    Args:
        pred, gt: [B, S, H, W, C]; conf: [B, S, H, W] (>= 1 from the heads); valid: [B, S, H, W] bool.

    Returns:
        (confidence term, gradient term, plain mean error ||pred - gt|| without confidence, for logging).
    """
    valid_c = valid[..., None]
    diff = torch.where(valid_c, pred - torch.where(valid_c, gt, torch.zeros_like(gt)), torch.zeros_like(pred))
    error = diff.norm(dim=-1)  # [B, S, H, W]
    counts = valid.flatten(1).sum(dim=1)

    def per_sample_sum(x: Tensor) -> Tensor:
        return x.flatten(1).sum(dim=1)

    conf_term = per_sample_mean(per_sample_sum((gamma * conf * error - alpha * torch.log(conf)) * valid), counts)
    grad_x = (diff[..., :, 1:, :] - diff[..., :, :-1, :]).norm(dim=-1)  # [B, S, H, W-1]
    valid_x = valid[..., :, 1:] & valid[..., :, :-1]
    grad_y = (diff[..., 1:, :, :] - diff[..., :-1, :, :]).norm(dim=-1)  # [B, S, H-1, W]
    valid_y = valid[..., 1:, :] & valid[..., :-1, :]
    grad_sums = per_sample_sum(conf[..., :, 1:] * grad_x * valid_x) + per_sample_sum(
        conf[..., 1:, :] * grad_y * valid_y
    )
    grad_term = per_sample_mean(grad_sums, counts)
    plain_error = per_sample_mean(per_sample_sum(error * valid), counts).detach()
    return conf_term, grad_term, plain_error


def dense_loss(
    name: str, pred: Tensor, conf: Tensor, gt: Tensor, valid: Tensor, config: DenseLossConfig
) -> dict[str, Tensor]:
    """Depth (`name`="depth", pred [B, S, H, W, 1], gt [B, S, H, W]) or point map (pred and gt [B, S, H, W, 3])."""
    if gt.dim() == pred.dim() - 1:
        gt = gt[..., None]
    conf_term, grad_term, plain_error = confidence_regression_loss(
        pred.float(), gt.float(), conf.float(), valid.bool(), config.alpha, config.gamma
    )
    return {
        name: conf_term + config.gradient_weight * grad_term,
        f"{name}_conf": conf_term,
        f"{name}_grad": grad_term,
        f"{name}_error": plain_error,
    }


# ------------------------------------------------------------------------------------- the sum


class PerSampleMultitaskLoss(TrainingLoss):
    """Sums the terms whose predictions and ground truth are both present.

    `forward(predictions, targets)` returns (total loss, dict of every computed term). `targets` is
    the output of `prepare_targets` (plus `track_targets` when tracks were queried).
    """

    valid_key = "valid"

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__(config or LossConfig(averaging="per_sample"))

    def prepare_targets(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return prepare_targets(batch, tuple(batch["images"].shape[-2:]))

    def total_and_terms(
        self, predictions: Mapping[str, Any], targets: Mapping[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return self(predictions, targets)

    def forward(self, predictions: Mapping[str, Any], targets: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config
        terms: dict[str, Tensor] = {}
        weighted: list[Tensor] = []
        has_dense = "valid" in targets and bool(targets["valid"].any())

        if cfg.camera is not None and "pose_enc_list" in predictions and "pose_enc" in targets:
            terms.update(camera_loss(predictions["pose_enc_list"], targets["pose_enc"], cfg.camera))
            weighted.append(cfg.camera.weight * terms["camera"])
        for name, section in (("depth", cfg.depth), ("point", cfg.point)):
            pred_key = DENSE_PREDICTIONS[name]
            if section is None or pred_key not in predictions or not has_dense:
                continue
            gt = targets["depths" if name == "depth" else "world_points"]
            terms.update(
                dense_loss(name, predictions[pred_key], predictions[f"{pred_key}_conf"], gt, targets["valid"], section)
            )
            weighted.append(section.weight * terms[name])
        track = self.track_terms(predictions, targets)
        if track is not None:
            terms.update(track)
            weighted.append(cfg.track.weight * terms["track"])
        if not weighted:
            raise ValueError(NO_TERM_MESSAGE)
        total = torch.stack(weighted).sum()
        return total, terms


def prepare_targets(batch: Mapping[str, Any], image_hw: tuple[int, int]) -> dict[str, Tensor]:
    """Normalised ground truth from a collated batch (keys as documented in training/data.py).

    Returns `pose_enc` [B, S, 9] and `extrinsics` when the batch has cameras, and `depths`,
    `world_points`, `valid` when it also has depth.
    """
    if "extrinsics" not in batch or "intrinsics" not in batch:
        raise ValueError("the batch has no 'extrinsics'/'intrinsics': every training sample needs cameras")
    depths = batch.get("depths")
    normalized = normalize_ground_truth(batch["extrinsics"], batch["intrinsics"], depths, batch.get("valid_masks"))
    targets = dict(normalized)
    targets["intrinsics"] = batch["intrinsics"].float()
    targets["pose_enc"] = extri_intri_to_pose_encoding(normalized["extrinsics"], targets["intrinsics"], image_hw)
    return targets
