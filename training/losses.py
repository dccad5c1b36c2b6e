"""The paper's multi-task training objective.

    L = w_cam L_camera + w_depth L_depth + w_point L_pmap + w_track L_track        (w_track = 0.05)

- L_camera: L1 between predicted and ground-truth 9-d pose encodings, for every refinement
  iteration i of n, weighted gamma^(n-1-i) so that later iterations count more.
- L_depth, L_pmap: aleatoric-uncertainty regression, per valid pixel
  `C ||pred - gt|| + C ||grad pred - grad gt|| - alpha log C`, with C the predicted confidence (>= 1).
- L_track: L1 between predicted and ground-truth tracks (every tracker iteration, gamma-weighted) plus a
  binary cross-entropy on visibility; ground truth comes from depth and cameras (`build_track_targets`).

Every term is averaged per sample first, then over the samples of the batch, so that a global batch gives
the same loss however it is split over processes. The camera term is L1, as in the reference training code
(the paper mentions Huber); the reference's optional extras (quantile filtering of outliers, multi-scale
gradients, a track-confidence term) are left out.

Ground truth is expressed in the first camera's frame and divided by the mean distance of its valid
3D points to that camera (`normalize_ground_truth`); predictions are used as they are. A term whose
ground truth the batch lacks (no depth, no valid pixel) is left out of the sum and out of the logged
terms, never replaced by a made-up zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vggt.utils.geometry import (
    as_homogeneous,
    camera_to_world_points,
    closed_form_inverse_se3,
    depth_map_to_world_points,
    pixels_to_camera_points,
    project_points,
)
from vggt.utils.pose_enc import extri_intri_to_pose_encoding

# Slices of the 9-d `absT_quaR_FoV` encoding.
TRANSLATION_DIMS = slice(0, 3)
ROTATION_DIMS = slice(3, 7)
FOCAL_DIMS = slice(7, 9)
# Scales below this (a degenerate scene) are replaced by 1 rather than divided by.
MIN_SCENE_SCALE = 1e-6
# Probabilities are clamped this far from 0 and 1 before the visibility cross-entropy.
PROBABILITY_EPS = 1e-6


# ----------------------------------------------------------------------------------- configuration


@dataclass
class CameraLossConfig:
    weight: float = 1.0
    gamma: float = 0.6  # iteration i of n weighs gamma^(n-1-i)
    weight_translation: float = 1.0
    weight_rotation: float = 1.0
    weight_focal: float = 0.5


@dataclass
class DenseLossConfig:
    weight: float = 1.0
    alpha: float = 0.2  # weight of the -log C confidence regulariser
    gradient_weight: float = 1.0


@dataclass
class TrackLossConfig:
    weight: float = 0.05
    gamma: float = 0.8
    visibility_weight: float = 1.0
    num_queries: int = 64  # query points drawn in the first frame per sample
    depth_tolerance: float = 0.05  # relative depth disagreement above which a reprojection counts as occluded


@dataclass
class LossConfig:
    """Weights and constants of every term; set a term's `enabled` to False in the YAML to drop it."""

    camera: CameraLossConfig = field(default_factory=CameraLossConfig)
    depth: DenseLossConfig = field(default_factory=DenseLossConfig)
    point: DenseLossConfig = field(default_factory=DenseLossConfig)
    track: TrackLossConfig = field(default_factory=TrackLossConfig)
    enabled: dict[str, bool] = field(
        default_factory=lambda: {"camera": True, "depth": True, "point": True, "track": True}
    )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LossConfig:
        sections = {"camera": CameraLossConfig, "depth": DenseLossConfig, "point": DenseLossConfig,
                    "track": TrackLossConfig}  # fmt: skip
        unknown = sorted(set(d) - set(sections))
        if unknown:
            raise ValueError(f"unknown loss terms {unknown}; known terms are {sorted(sections)}")
        kwargs: dict[str, Any] = {}
        enabled = {name: True for name in sections}
        for name, section_cls in sections.items():
            section = dict(d.get(name) or {})
            enabled[name] = bool(section.pop("enabled", True))
            try:
                kwargs[name] = section_cls(**section)
            except TypeError as err:
                raise ValueError(f"loss.{name}: {err}") from None
        return cls(**kwargs, enabled=enabled)


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
    centres = closed_form_inverse_se3(relative)[..., :3, 3]  # [B, S, 3], the first one at the origin
    if centres.shape[1] > 1:
        scale = centres[:, 1:].norm(dim=-1).mean(dim=1)
    else:
        scale = torch.ones_like(centres[:, 0, 0])
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


def build_track_targets(
    depths: Tensor,
    extrinsics: Tensor,
    intrinsics: Tensor,
    valid: Tensor,
    num_queries: int,
    depth_tolerance: float,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Point correspondences from depth and cameras, to supervise the track head.

    Query points are drawn among the valid pixels of the first frame, lifted to 3D with its depth and
    projected into every frame. A projection counts as visible when it lands on a valid pixel inside
    the image, in front of the camera, and that pixel's depth agrees with the projected depth within
    `depth_tolerance` (relative); otherwise the point is occluded or out of view there.

    Args:
        depths: [B, S, H, W]; extrinsics [B, S, 3, 4]; intrinsics [B, S, 3, 3]; valid [B, S, H, W] bool.

    Returns:
        dict with `query_points` [B, N, 2] (pixel x, y in frame 0), `tracks` [B, S, N, 2], `visible`
        [B, S, N] bool, and `query_valid` [B] bool (False for samples without a single valid pixel).
    """
    B, S, H, W = depths.shape
    flat_valid = valid[:, 0].flatten(1).float()  # [B, H*W]
    query_valid = flat_valid.sum(dim=1) > 0
    weights = torch.where(query_valid[:, None], flat_valid, torch.ones_like(flat_valid))
    index = torch.multinomial(weights.cpu(), num_queries, replacement=True, generator=generator).to(depths.device)
    rows = torch.div(index, W, rounding_mode="floor")
    cols = index % W
    query_points = torch.stack((cols, rows), dim=-1).to(depths.dtype)  # [B, N, 2]

    query_depth = depths[:, 0].flatten(1).gather(1, index)  # [B, N]
    points_cam0 = pixels_to_camera_points(query_points, query_depth, intrinsics[:, 0])  # [B, N, 3]
    points_world = camera_to_world_points(points_cam0, extrinsics[:, 0])
    tracks, projected_depth = project_points(points_world[:, None], extrinsics, intrinsics)  # [B,S,N,2], [B,S,N]

    cols_s = tracks[..., 0].round().long()
    rows_s = tracks[..., 1].round().long()
    inside = (cols_s >= 0) & (cols_s < W) & (rows_s >= 0) & (rows_s < H) & (projected_depth > 0)
    flat_index = (rows_s.clamp(0, H - 1) * W + cols_s.clamp(0, W - 1)).flatten(2)  # [B, S, N]
    seen_depth = depths.flatten(2).gather(2, flat_index)
    seen_valid = valid.flatten(2).gather(2, flat_index)
    consistent = (projected_depth - seen_depth).abs() <= depth_tolerance * seen_depth
    visible = inside & seen_valid & consistent & query_valid[:, None, None]
    return {"query_points": query_points, "tracks": tracks, "visible": visible, "query_valid": query_valid}


# --------------------------------------------------------------------------------------- terms


def iteration_weights(num_iterations: int, gamma: float) -> list[float]:
    """gamma^(n-1-i) for i = 0..n-1: the last iteration weighs 1."""
    return [gamma ** (num_iterations - 1 - i) for i in range(num_iterations)]


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
        config.weight_translation * terms["camera_T"]
        + config.weight_rotation * terms["camera_R"]
        + config.weight_focal * terms["camera_FL"]
    )
    return terms


def per_sample_mean(sums: Tensor, counts: Tensor) -> Tensor:
    """Mean over samples of `sums / counts` [B], skipping samples with nothing to count.

    Averaging per sample (rather than over all pixels of the batch) makes the loss of a global batch
    the same however it is split over processes: every scene weighs the same.
    """
    has_any = counts > 0
    return (sums[has_any] / counts[has_any]).mean()


def confidence_regression_loss(
    pred: Tensor, gt: Tensor, conf: Tensor, valid: Tensor, alpha: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Aleatoric regression of dense maps with its gradient term.

    Per valid pixel p: `C_p ||pred_p - gt_p|| - alpha log C_p`; per pair of horizontally or
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

    conf_term = per_sample_mean(per_sample_sum((conf * error - alpha * torch.log(conf)) * valid), counts)
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
        pred.float(), gt.float(), conf.float(), valid.bool(), config.alpha
    )
    return {
        name: conf_term + config.gradient_weight * grad_term,
        f"{name}_conf": conf_term,
        f"{name}_grad": grad_term,
        f"{name}_error": plain_error,
    }


def track_loss(
    track_list: Sequence[Tensor], vis: Tensor, targets: Mapping[str, Tensor], config: TrackLossConfig
) -> dict[str, Tensor]:
    """L1 (pixels) on visible ground-truth positions over tracker iterations, plus visibility BCE.

    Both are averaged per sample first (`per_sample_mean`).

    Args:
        track_list: tensors [B, S, N, 2] from the tracker's iterations (the last one at least).
        vis: [B, S, N] visibility probabilities.
        targets: output of `build_track_targets`.
    """
    gt_tracks = targets["tracks"].float()
    visible = targets["visible"]
    supervised = targets["query_valid"][:, None, None].expand_as(visible)
    visible_counts = visible.flatten(1).sum(dim=1)
    weights = iteration_weights(len(track_list), config.gamma)
    position = gt_tracks.new_zeros(())
    for weight, track in zip(weights, track_list):
        error = (track.float() - gt_tracks).abs().mean(dim=-1)  # [B, S, N]
        position = position + weight * per_sample_mean((error * visible).flatten(1).sum(dim=1), visible_counts)
    position = position / len(weights)
    probabilities = vis.float().clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    cross_entropy = F.binary_cross_entropy(probabilities, visible.float(), reduction="none") * supervised
    visibility = per_sample_mean(cross_entropy.flatten(1).sum(dim=1), supervised.flatten(1).sum(dim=1))
    return {
        "track": position + config.visibility_weight * visibility,
        "track_position": position,
        "track_visibility": visibility,
    }


# ------------------------------------------------------------------------------------- the sum


class MultitaskLoss(torch.nn.Module):
    """Sums the terms whose predictions and ground truth are both present.

    `forward(predictions, targets)` returns (total loss, dict of every computed term). `targets` is
    the output of `prepare_targets` (plus `track_targets` when tracks were queried).
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()

    def wants_tracks(self) -> bool:
        return self.config.enabled["track"] and self.config.track.weight > 0

    def forward(self, predictions: Mapping[str, Any], targets: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        cfg, enabled = self.config, self.config.enabled
        terms: dict[str, Tensor] = {}
        weighted: list[Tensor] = []
        has_dense = "valid" in targets and bool(targets["valid"].any())

        if enabled["camera"] and "pose_enc_list" in predictions and "pose_enc" in targets:
            terms.update(camera_loss(predictions["pose_enc_list"], targets["pose_enc"], cfg.camera))
            weighted.append(cfg.camera.weight * terms["camera"])
        if enabled["depth"] and "depth" in predictions and has_dense:
            terms.update(
                dense_loss(
                    "depth",
                    predictions["depth"],
                    predictions["depth_conf"],
                    targets["depths"],
                    targets["valid"],
                    cfg.depth,
                )  # fmt: skip
            )
            weighted.append(cfg.depth.weight * terms["depth"])
        if enabled["point"] and "world_points" in predictions and has_dense:
            terms.update(
                dense_loss(
                    "point",
                    predictions["world_points"],
                    predictions["world_points_conf"],
                    targets["world_points"],
                    targets["valid"],
                    cfg.point,
                )  # fmt: skip
            )
            weighted.append(cfg.point.weight * terms["point"])
        track_targets = targets.get("track_targets")
        if enabled["track"] and "track" in predictions and track_targets is not None and track_targets["visible"].any():
            track_list = predictions.get("track_list") or [predictions["track"]]
            terms.update(track_loss(track_list, predictions["vis"], track_targets, cfg.track))
            weighted.append(cfg.track.weight * terms["track"])
        if not weighted:
            raise ValueError(
                "no loss term could be computed: the batch has no usable ground truth for the model's enabled heads "
                "(cameras need 'extrinsics' and 'intrinsics'; depth and point maps need 'depths' with valid pixels)"
            )
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
