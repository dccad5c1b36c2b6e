"""Ground truth for the reference recipe: the reference's batch keys built from our data pipeline, and its
normalisation (facebookresearch/vggt `training/train_utils/normalization.py`).

The reference moves every camera and point into the first camera's frame and divides lengths by the mean
distance of the valid world points to that camera, `sum(dist * mask) / (count + 1e-3)`, clamped to
[1e-6, 1e6]. Ours adds one case the reference does not have: a sample without a single valid point (no depth)
is scaled by the mean distance of the other cameras' centres to the first one (1 for a single frame), so that
camera-only samples still give a usable camera target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from training.losses.gradients import finite_or_zero
from vggt.utils.geometry import as_homogeneous, closed_form_inverse_se3, depth_map_to_camera_points

SCALE_COUNT_EPS = 1e-3  # added to the valid-point count in the mean distance
MIN_SCALE, MAX_SCALE = 1e-6, 1e6


def camera_centre_scale(relative_extrinsics: Tensor) -> Tensor:
    """[B]: mean distance of the cameras' centres to the first camera (1 for single-frame samples).

    Args:
        relative_extrinsics: [B, S, 4, 4] camera-from-first-camera.
    """
    centres = closed_form_inverse_se3(relative_extrinsics)[..., :3, 3]  # [B, S, 3], the first one at the origin
    if centres.shape[1] < 2:
        return torch.ones_like(centres[:, 0, 0])
    return centres[:, 1:].norm(dim=-1).mean(dim=1)


@torch.no_grad()
def normalize_camera_extrinsics_and_points_batch(
    extrinsics: Tensor,
    cam_points: Tensor | None = None,
    world_points: Tensor | None = None,
    depths: Tensor | None = None,
    scale_by_points: bool = True,
    point_masks: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """The reference's ground-truth normalisation (plus the camera-centre scale of samples without points).

    Args:
        extrinsics: [B, S, 3, 4] camera-from-world.
        cam_points: [B, S, H, W, 3] points in each camera's frame, or None.
        world_points: [B, S, H, W, 3] world points, or None (then every sample takes the camera-centre scale).
        depths: [B, S, H, W], or None.
        scale_by_points: False only moves everything into the first camera's frame.
        point_masks: [B, S, H, W] bool, the points that count in the scale (needed with world_points).

    Returns:
        (extrinsics [B, S, 3, 4] with the first camera at the identity, cam_points, world_points, depths), each
        divided by the scale, non-finite values zeroed. Without scaling, cam_points and depths come back as given.
    """
    homogeneous = as_homogeneous(extrinsics)
    first_to_world = closed_form_inverse_se3(homogeneous[:, 0])  # [B, 4, 4]
    relative = homogeneous @ first_to_world[:, None]  # [B, S, 4, 4] camera-from-first-camera
    new_points = None
    if world_points is not None:
        rotation, translation = extrinsics[:, 0, :3, :3], extrinsics[:, 0, :3, 3]
        new_points = world_points @ rotation.transpose(-1, -2)[:, None, None] + translation[:, None, None, None]
    if not scale_by_points:
        return relative[:, :, :3], cam_points, new_points, depths

    scale = camera_centre_scale(relative)
    if new_points is not None:
        if point_masks is None:
            raise ValueError("point_masks is needed to scale by world_points; pass the valid-pixel masks [B, S, H, W]")
        distance_sum = (new_points.norm(dim=-1) * point_masks).sum(dim=(1, 2, 3))
        count = point_masks.sum(dim=(1, 2, 3))
        point_scale = (distance_sum / (count + SCALE_COUNT_EPS)).clamp(min=MIN_SCALE, max=MAX_SCALE)
        scale = torch.where(count > 0, point_scale, scale)
    scale = torch.where(torch.isfinite(scale) & (scale >= MIN_SCALE), scale, torch.ones_like(scale))

    relative = relative[:, :, :3].clone()
    relative[..., 3] = relative[..., 3] / scale[:, None, None]
    per_map = scale[:, None, None, None]
    outputs = (
        relative,
        None if cam_points is None else cam_points / per_map[..., None],
        None if new_points is None else new_points / per_map[..., None],
        None if depths is None else depths / per_map,
    )
    return tuple(None if t is None else finite_or_zero(t, hard_max=None) for t in outputs)  # type: ignore[return-value]


def reference_batch(batch: Mapping[str, Any]) -> dict[str, Tensor]:
    """The reference's normalised batch from a collated batch of `training.data`.

    Args:
        batch: `images` [B, S, 3, H, W], `extrinsics` [B, S, 3, 4], `intrinsics` [B, S, 3, 3], and optionally
            `depths` [B, S, H, W], `valid_masks` [B, S, H, W] bool, `has_depth` [B] bool.

    Returns:
        `images`, `extrinsics` (normalised), `intrinsics`, and with depth `depths`, `cam_points`,
        `world_points` [B, S, H, W, 3] (normalised, in the first camera's frame), `point_masks`, and `has_depth`
        (as given, or: has a valid pixel).
    """
    if "extrinsics" not in batch or "intrinsics" not in batch:
        raise ValueError("the batch has no 'extrinsics'/'intrinsics': every training sample needs cameras")
    extrinsics, intrinsics = batch["extrinsics"].float(), batch["intrinsics"].float()
    out: dict[str, Tensor] = {"images": batch["images"], "intrinsics": intrinsics}
    if batch.get("depths") is None:
        out["extrinsics"] = normalize_camera_extrinsics_and_points_batch(extrinsics)[0]
        return out
    depths = batch["depths"].float()
    masks = depths > 0
    if batch.get("valid_masks") is not None:
        masks = masks & batch["valid_masks"].bool()
    masks = masks & torch.isfinite(depths)
    depths = torch.where(masks, depths, torch.zeros_like(depths))
    cam_points = depth_map_to_camera_points(depths, intrinsics)  # [B, S, H, W, 3]
    # World points of the reference's datasets: R^T (X_cam - t) per frame.
    rotation, translation = extrinsics[..., :3, :3], extrinsics[..., :3, 3]
    world_points = (cam_points - translation[:, :, None, None]) @ rotation[:, :, None]
    normalized = normalize_camera_extrinsics_and_points_batch(extrinsics, cam_points, world_points, depths, True, masks)
    out["extrinsics"], out["cam_points"], out["world_points"], out["depths"] = normalized
    out["point_masks"] = masks
    out["has_depth"] = batch["has_depth"].bool() if "has_depth" in batch else masks.flatten(1).any(dim=1)
    return out
