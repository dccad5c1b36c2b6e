"""The 9-number camera encoding the camera head predicts, and its conversion to and from camera matrices.

`absT_quaR_FoV` = `[tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]`:
- translation `t` and rotation quaternion `q` (scalar last) of the OpenCV camera-from-world extrinsics `[R | t]`,
- vertical then horizontal field of view in radians, for a pinhole camera whose principal point is the image centre
  `(W / 2, H / 2)`: `fov_h = 2 atan(H / (2 fy))`, `fov_w = 2 atan(W / (2 fx))`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vggt.utils.rotation import mat_to_quat, quat_to_mat

POSE_ENCODING_TYPES = ("absT_quaR_FoV",)
POSE_ENCODING_DIM = 9


def extri_intri_to_pose_encoding(
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    image_size_hw: Sequence[int] | None = None,
    pose_encoding_type: str = "absT_quaR_FoV",
) -> torch.Tensor:
    """Encode cameras.

    Args:
        extrinsics: [..., 3, 4] camera-from-world `[R | t]` (OpenCV convention), e.g. [B, S, 3, 4].
        intrinsics: [..., 3, 3] pinhole intrinsics; only the focal lengths are encoded.
        image_size_hw: (height, width) in pixels of the images the intrinsics refer to.
        pose_encoding_type: only "absT_quaR_FoV".

    Returns:
        [..., 9] float32 pose encoding (the reference's dtype, whatever the inputs').
    """
    _check_type(pose_encoding_type)
    height, width = _check_image_size(image_size_hw)
    if extrinsics.shape[-2:] != (3, 4) or intrinsics.shape[-2:] != (3, 3):
        raise ValueError(
            f"expected extrinsics [..., 3, 4] and intrinsics [..., 3, 3], got {tuple(extrinsics.shape)} "
            f"and {tuple(intrinsics.shape)}"
        )
    translation = extrinsics[..., :3, 3]
    quaternion = mat_to_quat(extrinsics[..., :3, :3])
    fov_h = fov_from_focal(intrinsics[..., 1, 1], height)
    fov_w = fov_from_focal(intrinsics[..., 0, 0], width)
    fov = torch.stack((fov_h, fov_w), dim=-1).to(translation.dtype)
    return torch.cat((translation, quaternion, fov), dim=-1).float()


def pose_encoding_to_extri_intri(
    pose_encoding: torch.Tensor,
    image_size_hw: Sequence[int] | None = None,
    pose_encoding_type: str = "absT_quaR_FoV",
    build_intrinsics: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode cameras.

    Args:
        pose_encoding: [..., 9], e.g. [B, S, 9].
        image_size_hw: (height, width) in pixels; required when `build_intrinsics`.
        pose_encoding_type: only "absT_quaR_FoV".
        build_intrinsics: also return intrinsics (principal point at the image centre).

    Returns:
        extrinsics [..., 3, 4] camera-from-world in the encoding's dtype, and float32 intrinsics [..., 3, 3] (None if
        not `build_intrinsics`), the reference's dtypes.
    """
    _check_type(pose_encoding_type)
    if pose_encoding.shape[-1] != POSE_ENCODING_DIM:
        raise ValueError(f"pose encoding must have shape [..., {POSE_ENCODING_DIM}], got {tuple(pose_encoding.shape)}")
    translation = pose_encoding[..., :3]
    rotation = quat_to_mat(pose_encoding[..., 3:7])
    extrinsics = torch.cat((rotation, translation[..., None]), dim=-1)
    if not build_intrinsics:
        return extrinsics, None

    height, width = _check_image_size(image_size_hw)
    intrinsics = pose_encoding.new_zeros(pose_encoding.shape[:-1] + (3, 3), dtype=torch.float32)
    intrinsics[..., 0, 0] = focal_from_fov(pose_encoding[..., 8], width)
    intrinsics[..., 1, 1] = focal_from_fov(pose_encoding[..., 7], height)
    intrinsics[..., 0, 2] = width / 2
    intrinsics[..., 1, 2] = height / 2
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def focal_from_fov(fov: torch.Tensor, size: float) -> torch.Tensor:
    """Focal length in pixels of a field of view `fov` (radians) spanning `size` pixels."""
    return (size / 2.0) / torch.tan(fov / 2.0)


def fov_from_focal(focal: torch.Tensor, size: float) -> torch.Tensor:
    """Field of view in radians spanned by `size` pixels at focal length `focal` (pixels)."""
    return 2.0 * torch.atan((size / 2.0) / focal)


def _check_type(pose_encoding_type: str) -> None:
    if pose_encoding_type not in POSE_ENCODING_TYPES:
        raise ValueError(f"unknown pose encoding {pose_encoding_type!r}; supported: {', '.join(POSE_ENCODING_TYPES)}")


def _check_image_size(image_size_hw: Sequence[int] | None) -> tuple[int, int]:
    if image_size_hw is None or len(image_size_hw) != 2:
        raise ValueError(f"image_size_hw must be (height, width) in pixels, got {image_size_hw!r}")
    height, width = (int(v) for v in image_size_hw)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size_hw must be positive, got {image_size_hw!r}")
    return height, width
