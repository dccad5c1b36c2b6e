"""The outputs of every model family as one set of geometry: cameras, depth and world points.

`to_geometry(outputs, image_hw)` returns, for a batch of B scenes of S frames of H x W pixels:
- `extrinsics` [B, S, 3, 4]: OpenCV camera-from-world; the world is the FIRST camera's frame for every family
  (Pi3 has no reference frame: its poses and points are re-expressed in its first camera's frame);
- `intrinsics` [B, S, 3, 3]: pinhole, principal point at the image centre;
- `depth` [B, S, H, W] and `depth_conf` [B, S, H, W];
- `world_points` [B, S, H, W, 3] and `world_points_conf` [B, S, H, W].

VGGT-Omega predicts cameras and depth; its points are the depth unprojected with its cameras. Pi3 predicts
camera-frame points and camera-to-world poses; its depth is the points' z, its focal lengths are the least-squares
fit of `u - cx = fx * x / z` and `v - cy = fy * y / z` over the confident pixels (pixel
coordinates as `vggt.utils.geometry.pixel_grid` numbers them) (Pi3 predicts no intrinsics), and
its confidence is the sigmoid of its logits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vggt.utils.geometry import closed_form_inverse_se3, depth_map_to_world_points, pixel_grid
from vggt.utils.pose_enc import pose_encoding_to_extri_intri

# Pixels whose Pi3 confidence (a probability) is below this are left out of the focal-length fit.
FOCAL_FIT_MIN_CONFIDENCE = 0.1


def to_geometry(outputs: dict[str, Tensor], image_hw: tuple[int, int]) -> dict[str, Tensor]:
    """Cameras, depth and world points (see the module docstring) of one model's `forward` outputs."""
    if "pose_enc" in outputs:
        return _from_pose_encoding(outputs, image_hw)
    if "camera_poses" in outputs:
        return _from_camera_poses(outputs, image_hw)
    raise ValueError(f"outputs hold neither 'pose_enc' nor 'camera_poses' (keys: {sorted(outputs)})")


def _from_pose_encoding(outputs: dict[str, Tensor], image_hw: tuple[int, int]) -> dict[str, Tensor]:
    extrinsics, intrinsics = pose_encoding_to_extri_intri(outputs["pose_enc"], image_hw)
    depth = outputs["depth"][..., 0]
    points = depth_map_to_world_points(depth, extrinsics, intrinsics)
    return {
        "extrinsics": extrinsics,
        "intrinsics": intrinsics,
        "depth": depth,
        "depth_conf": outputs["depth_conf"],
        "world_points": points,
        "world_points_conf": outputs["depth_conf"],
    }


def _from_camera_poses(outputs: dict[str, Tensor], image_hw: tuple[int, int]) -> dict[str, Tensor]:
    poses = outputs["camera_poses"]  # [B, S, 4, 4] camera-to-world
    first_from_world = closed_form_inverse_se3(poses[:, :1])  # [B, 1, 4, 4]
    cam_to_first = first_from_world @ poses
    extrinsics = closed_form_inverse_se3(cam_to_first)[..., :3, :]
    points = outputs["points"]
    world_points = torch.einsum("bij,bshwj->bshwi", first_from_world[:, 0, :3, :3], points)
    world_points = world_points + first_from_world[:, 0, None, None, None, :3, 3]
    conf = torch.sigmoid(outputs["conf"][..., 0])
    local = outputs["local_points"]
    return {
        "extrinsics": extrinsics,
        "intrinsics": fit_intrinsics(local, conf > FOCAL_FIT_MIN_CONFIDENCE),
        "depth": local[..., 2],
        "depth_conf": conf,
        "world_points": world_points,
        "world_points_conf": conf,
    }


def fit_intrinsics(local_points: Tensor, mask: Tensor) -> Tensor:
    """Pinhole intrinsics [B, S, 3, 3] (centred principal point) that best project camera-frame points
    [B, S, H, W, 3] onto their pixel centres, by least squares over `mask` [B, S, H, W] (all pixels if empty)."""
    *batch, H, W, _ = local_points.shape
    pixels = pixel_grid(H, W, device=local_points.device, dtype=local_points.dtype)  # the unprojection's grid
    cols, rows = pixels[..., 0], pixels[..., 1]
    z = local_points[..., 2].clamp_min(1e-8)
    ratio_x, ratio_y = local_points[..., 0] / z, local_points[..., 1] / z
    weight = mask.to(local_points.dtype)
    weight = torch.where(weight.sum(dim=(-2, -1), keepdim=True) > 0, weight, torch.ones_like(weight))

    def fit(ratio: Tensor, offset: Tensor) -> Tensor:
        return (weight * ratio * offset).sum(dim=(-2, -1)) / (weight * ratio * ratio).sum(dim=(-2, -1)).clamp_min(1e-12)

    intrinsics = local_points.new_zeros(*batch, 3, 3)
    intrinsics[..., 0, 0] = fit(ratio_x, cols - W / 2)
    intrinsics[..., 1, 1] = fit(ratio_y, rows - H / 2)
    intrinsics[..., 0, 2] = W / 2
    intrinsics[..., 1, 2] = H / 2
    intrinsics[..., 2, 2] = 1.0
    return intrinsics
