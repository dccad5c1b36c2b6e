"""The reference's `vggt.dependency.projection`: world points to pixels for B cameras, in torch and numpy.

Layouts are the reference's: points [N, 3], extrinsics [B, 3, 4], intrinsics [B, 3, 3], camera points [B, 3, N],
pixels [B, N, 2]. The computation is `vggt.utils.geometry`'s.
"""

from __future__ import annotations

import numpy as np
import torch

from vggt.utils import geometry
from vggt.utils.geometry import project_world_points_to_cam

__all__ = ["img_from_cam", "img_from_cam_np", "project_3D_points", "project_3D_points_np"]


def project_3D_points(
    points3D: torch.Tensor,
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor | None = None,
    extra_params: torch.Tensor | None = None,
    default: float = 0,
    only_points_cam: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Pixels [B, N, 2] (None if `only_points_cam`) and camera points [B, 3, N] of points3D [N, 3] in B cameras.

    `extra_params` [B, K] are distortion coefficients (K = 1, 2, 4); NaNs in the pixels become `default`.
    """
    with torch.autocast(device_type=points3D.device.type, enabled=False):
        return project_world_points_to_cam(
            points3D, extrinsics, intrinsics, extra_params, default=default, only_points_cam=only_points_cam
        )


def project_3D_points_np(
    points3D: np.ndarray,
    extrinsics: np.ndarray,
    intrinsics: np.ndarray | None = None,
    extra_params: np.ndarray | None = None,
    *,
    default: float = 0.0,
    only_points_cam: bool = False,
) -> tuple[np.ndarray | None, np.ndarray]:
    """`project_3D_points` for numpy arrays: pixels [B, N, 2] (or None) and camera points [B, 3, N], float64."""
    pixels, points_cam = project_3D_points(
        _float64_tensor(points3D),
        _float64_tensor(extrinsics),
        _float64_tensor(intrinsics),
        _float64_tensor(extra_params),
        default=default,
        only_points_cam=only_points_cam,
    )
    return (None if pixels is None else pixels.numpy()), points_cam.numpy()


def img_from_cam(
    intrinsics: torch.Tensor, points_cam: torch.Tensor, extra_params: torch.Tensor | None = None, default: float = 0.0
) -> torch.Tensor:
    """Camera points [B, 3, N] -> pixels [B, N, 2] through intrinsics [B, 3, 3] and distortion `extra_params`
    [B, K] (K = 1, 2, 4); NaNs become `default`. `vggt.utils.geometry.img_from_cam` under this module's names."""
    return geometry.img_from_cam(intrinsics, points_cam, extra_params, default=default)


def img_from_cam_np(
    intrinsics: np.ndarray, points_cam: np.ndarray, extra_params: np.ndarray | None = None, default: float = 0.0
) -> np.ndarray:
    """`img_from_cam` for numpy: camera points [B, 3, N] -> pixels [B, N, 2], float64."""
    pixels = img_from_cam(
        _float64_tensor(intrinsics), _float64_tensor(points_cam), _float64_tensor(extra_params), default=default
    )
    return pixels.numpy()


def _float64_tensor(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(np.asarray(array, dtype=np.float64))
