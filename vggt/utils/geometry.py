"""Camera geometry shared by inference, export, bundle adjustment, evaluation and training.

Conventions:
- extrinsics are OpenCV camera-from-world `[R | t]`, [..., 3, 4] (or [..., 4, 4]): `X_cam = R X_world + t`,
  with x right, y down, z forward;
- intrinsics are pinhole [..., 3, 3]; pixel coordinates are `(x, y) = (column, row)` with the centre of pixel
  `(i, j)` at the integer coordinate `(i, j)`, the convention in which VGGT's depth maps are unprojected;
- depth is the camera-space z of the point a pixel sees.

The batched functions take torch tensors or numpy arrays with any matching leading dimensions and give back the
type of their first argument. numpy inputs are computed in float64 and returned in their own float dtype.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from vggt.utils.distortion import distortion_offsets, iterative_undistortion

Array = TypeVar("Array", np.ndarray, torch.Tensor)

# Depth magnitudes below this are treated as this when dividing by z.
_MIN_DEPTH = 1e-8


# --- numpy / torch plumbing -------------------------------------------------------------------------------------


def _to_torch(*arrays):
    """Torch views of numpy/torch arguments (None passes through), and whether the first one was numpy.

    numpy inputs become float64 tensors; numpy arguments next to a torch first argument take its device and dtype.
    """
    first = arrays[0]
    is_numpy = isinstance(first, np.ndarray)
    reference = None if is_numpy else first
    tensors = []
    for array in arrays:
        if array is None:
            tensors.append(None)
        elif isinstance(array, np.ndarray):
            tensor = torch.from_numpy(np.asarray(array, dtype=np.float64))
            if reference is not None:
                tensor = tensor.to(device=reference.device, dtype=reference.dtype)
            tensors.append(tensor)
        elif isinstance(array, torch.Tensor):
            tensors.append(array.detach().cpu().double() if is_numpy else array)
        else:
            raise TypeError(f"expected a numpy array or a torch tensor, got {type(array).__name__}")
    return tensors, is_numpy


def _to_numpy(array) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _float_dtype(*arrays) -> np.dtype:
    """The float dtype numpy results take: that of the numpy arguments, float64 for integer ones."""
    dtype = np.result_type(*[a.dtype for a in arrays if isinstance(a, np.ndarray)])
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _back(tensor: torch.Tensor, is_numpy: bool, dtype: np.dtype | None = None):
    if not is_numpy:
        return tensor
    array = tensor.detach().cpu().numpy()
    return array.astype(dtype, copy=False) if dtype is not None else array


def _check_matrices(extrinsics=None, intrinsics=None) -> None:
    if extrinsics is not None and tuple(extrinsics.shape[-2:]) not in ((3, 4), (4, 4)):
        raise ValueError(f"extrinsics must have shape [..., 3, 4] or [..., 4, 4], got {tuple(extrinsics.shape)}")
    if intrinsics is not None and tuple(intrinsics.shape[-2:]) != (3, 3):
        raise ValueError(f"intrinsics must have shape [..., 3, 3], got {tuple(intrinsics.shape)}")


# --- rigid transforms ---------------------------------------------------------------------------------------------


def closed_form_inverse_se3(se3: Array, R: Array | None = None, T: Array | None = None) -> Array:
    """Invert rigid transforms without a general matrix inverse: `[R | t]^-1 = [R^T | -R^T t]`.

    Args:
        se3: [..., 3, 4] or [..., 4, 4] rigid transforms (numpy or torch).
        R: optional [..., 3, 3] rotation part, if already at hand.
        T: optional [..., 3, 1] translation part.

    Returns:
        [..., 4, 4] inverses, same type as `se3`: torch keeps its dtype and device, numpy is float64 (as the
        reference).
    """
    if tuple(se3.shape[-2:]) not in ((3, 4), (4, 4)):
        raise ValueError(f"se3 must have shape [..., 3, 4] or [..., 4, 4], got {tuple(se3.shape)}")
    rotation = se3[..., :3, :3] if R is None else R
    translation = se3[..., :3, 3:] if T is None else T
    if isinstance(se3, np.ndarray):
        rotation_t = np.swapaxes(rotation, -1, -2)
        inverse = np.zeros(se3.shape[:-2] + (4, 4), dtype=np.float64)
        inverse[..., :3, :3] = rotation_t
        inverse[..., :3, 3:] = -rotation_t @ translation
    else:
        rotation_t = rotation.transpose(-1, -2)
        inverse = se3.new_zeros(se3.shape[:-2] + (4, 4))
        inverse[..., :3, :3] = rotation_t
        inverse[..., :3, 3:] = -rotation_t @ translation
    inverse[..., 3, 3] = 1
    return inverse


def as_homogeneous(se3: Array) -> Array:
    """[..., 3, 4] (or [..., 4, 4]) transforms as [..., 4, 4] matrices with last row `[0, 0, 0, 1]`."""
    if tuple(se3.shape[-2:]) == (4, 4):
        return se3
    if tuple(se3.shape[-2:]) != (3, 4):
        raise ValueError(f"se3 must have shape [..., 3, 4] or [..., 4, 4], got {tuple(se3.shape)}")
    if isinstance(se3, np.ndarray):
        bottom = np.zeros(se3.shape[:-2] + (1, 4), dtype=se3.dtype)
        bottom[..., 0, 3] = 1
        return np.concatenate((se3, bottom), axis=-2)
    bottom = se3.new_zeros(se3.shape[:-2] + (1, 4))
    bottom[..., 0, 3] = 1
    return torch.cat((se3, bottom), dim=-2)


def world_to_camera_points(points_world: Array, extrinsics: Array) -> Array:
    """`R X + t`: [..., N, 3] world points into each camera, extrinsics [..., 3, 4] camera-from-world."""
    (points, extrinsics_t), is_numpy = _to_torch(points_world, extrinsics)
    _check_matrices(extrinsics=extrinsics_t)
    rotation, translation = extrinsics_t[..., :3, :3], extrinsics_t[..., :3, 3]
    points_cam = points @ rotation.transpose(-1, -2) + translation[..., None, :]
    return _back(points_cam, is_numpy, _float_dtype(points_world, extrinsics) if is_numpy else None)


def camera_to_world_points(points_cam: Array, extrinsics: Array) -> Array:
    """`R^T (X - t)`: [..., N, 3] camera points to world, extrinsics [..., 3, 4] camera-from-world."""
    (points, extrinsics_t), is_numpy = _to_torch(points_cam, extrinsics)
    _check_matrices(extrinsics=extrinsics_t)
    rotation, translation = extrinsics_t[..., :3, :3], extrinsics_t[..., :3, 3]
    points_world = (points - translation[..., None, :]) @ rotation
    return _back(points_world, is_numpy, _float_dtype(points_cam, extrinsics) if is_numpy else None)


# --- projection ---------------------------------------------------------------------------------------------------


def apply_radial_distortion(points_normalized: Array, radial: Array) -> Array:
    """Lens distortion of normalised image points, in COLMAP's SIMPLE_RADIAL, RADIAL or OPENCV model.

    Args:
        points_normalized: [..., N, 2] points `(x / z, y / z)`.
        radial: [..., K] coefficients, K = 1, 2 or 4 (see `vggt.utils.distortion`).

    Returns:
        [..., N, 2] distorted points, e.g. `p (1 + k1 r^2 + k2 r^4)` for K = 2.
    """
    (points, coefficients), is_numpy = _to_torch(points_normalized, radial)
    distorted = points + distortion_offsets(points, coefficients)
    return _back(distorted, is_numpy, _float_dtype(points_normalized, radial) if is_numpy else None)


def camera_points_to_pixels(
    points_cam: Array, intrinsics: Array, radial_distortion: Array | None = None
) -> tuple[Array, Array]:
    """Project camera-space points.

    Args:
        points_cam: [..., N, 3].
        intrinsics: [..., 3, 3].
        radial_distortion: optional [..., K] radial coefficients (see `apply_radial_distortion`).

    Returns:
        pixels [..., N, 2] and depth [..., N] (z; pixels of points with z <= 0 are meaningless, mask with depth > 0).
    """
    (points, intrinsics_t, radial), is_numpy = _to_torch(points_cam, intrinsics, radial_distortion)
    _check_matrices(intrinsics=intrinsics_t)
    depth = points[..., 2]
    safe_depth = torch.where(depth.abs() < _MIN_DEPTH, torch.full_like(depth, _MIN_DEPTH), depth)
    normalized = points[..., :2] / safe_depth[..., None]
    if radial is not None:
        normalized = apply_radial_distortion(normalized, radial)
    homogeneous = torch.cat((normalized, torch.ones_like(normalized[..., :1])), dim=-1)
    pixels = (homogeneous @ intrinsics_t.transpose(-1, -2))[..., :2]
    dtype = _float_dtype(points_cam, intrinsics) if is_numpy else None
    return _back(pixels, is_numpy, dtype), _back(depth, is_numpy, dtype)


def project_points(
    points_world: Array, extrinsics: Array, intrinsics: Array, radial_distortion: Array | None = None
) -> tuple[Array, Array]:
    """Project world points into cameras.

    Args:
        points_world: [..., N, 3], e.g. [N, 3] shared by all cameras or [S, N, 3] per camera.
        extrinsics: [..., 3, 4] camera-from-world, e.g. [S, 3, 4] (leading dims broadcast against the points').
        intrinsics: [..., 3, 3].
        radial_distortion: optional [..., K] radial coefficients, K = 1 or 2.

    Returns:
        pixels [..., N, 2] and depth [..., N] in each camera.
    """
    (points, extrinsics_t, intrinsics_t, radial), is_numpy = _to_torch(
        points_world, extrinsics, intrinsics, radial_distortion
    )
    _check_matrices(extrinsics_t, intrinsics_t)
    rotation, translation = extrinsics_t[..., :3, :3], extrinsics_t[..., :3, 3]
    points_cam = points @ rotation.transpose(-1, -2) + translation[..., None, :]
    pixels, depth = camera_points_to_pixels(points_cam, intrinsics_t, radial)
    dtype = _float_dtype(points_world, extrinsics, intrinsics) if is_numpy else None
    return _back(pixels, is_numpy, dtype), _back(depth, is_numpy, dtype)


def project_world_points_to_cam(
    world_points: torch.Tensor,
    cam_extrinsics: torch.Tensor,
    cam_intrinsics: torch.Tensor | None = None,
    distortion_params: torch.Tensor | None = None,
    default: float = 0.0,
    only_points_cam: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Reference-layout wrapper of `project_points` for [P, 3] points and B cameras.

    Returns:
        pixels [B, P, 2] (NaNs replaced by `default`; None if `only_points_cam`) and camera points [B, 3, P].
    """
    points_cam = world_to_camera_points(world_points, cam_extrinsics)  # [B, P, 3]
    if only_points_cam:
        return None, points_cam.transpose(-1, -2)
    if cam_intrinsics is None:
        raise ValueError("cam_intrinsics is required to project to pixels (or pass only_points_cam=True)")
    pixels, _ = camera_points_to_pixels(points_cam, cam_intrinsics, distortion_params)
    return torch.nan_to_num(pixels, nan=default), points_cam.transpose(-1, -2)


def pixels_to_camera_points(pixels: Array, depth: Array, intrinsics: Array) -> Array:
    """Lift pixels with known depth to camera space (inverse of `camera_points_to_pixels` without distortion).

    Args:
        pixels: [..., N, 2] `(x, y)`.
        depth: [..., N] camera-space z.
        intrinsics: [..., 3, 3] (skew allowed).

    Returns:
        [..., N, 3] camera points.
    """
    (pixels_t, depth_t, intrinsics_t), is_numpy = _to_torch(pixels, depth, intrinsics)
    _check_matrices(intrinsics=intrinsics_t)
    fx, skew, cx = (intrinsics_t[..., 0, j, None] for j in range(3))
    fy, cy = intrinsics_t[..., 1, 1, None], intrinsics_t[..., 1, 2, None]
    y = (pixels_t[..., 1] - cy) / fy
    x = (pixels_t[..., 0] - cx - skew * y) / fx
    points = torch.stack((x * depth_t, y * depth_t, depth_t), dim=-1)
    return _back(points, is_numpy, _float_dtype(pixels, depth, intrinsics) if is_numpy else None)


# --- depth maps ---------------------------------------------------------------------------------------------------


def pixel_grid(
    height: int, width: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """[H, W, 2] pixel coordinates `(x, y)` = (column, row) of every pixel centre."""
    rows = torch.arange(height, device=device, dtype=dtype)
    cols = torch.arange(width, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1)


def depth_map_to_camera_points(depth: Array, intrinsics: Array) -> Array:
    """Unproject depth maps to camera space.

    Args:
        depth: [..., H, W] depth maps.
        intrinsics: [..., 3, 3].

    Returns:
        [..., H, W, 3] camera points.
    """
    (depth_t, intrinsics_t), is_numpy = _to_torch(depth, intrinsics)
    height, width = depth_t.shape[-2:]
    pixels = pixel_grid(height, width, device=depth_t.device, dtype=depth_t.dtype).reshape(-1, 2)
    batch_shape = depth_t.shape[:-2]
    points = pixels_to_camera_points(pixels, depth_t.reshape(batch_shape + (-1,)), intrinsics_t)
    points = points.reshape(points.shape[:-2] + (height, width, 3))
    return _back(points, is_numpy, _float_dtype(depth, intrinsics) if is_numpy else None)


def depth_map_to_world_points(depth: Array, extrinsics: Array, intrinsics: Array) -> Array:
    """Unproject depth maps to world space.

    Args:
        depth: [..., H, W] depth maps, e.g. [B, S, H, W].
        extrinsics: [..., 3, 4] camera-from-world, e.g. [B, S, 3, 4].
        intrinsics: [..., 3, 3].

    Returns:
        [..., H, W, 3] world points.
    """
    (depth_t, extrinsics_t, intrinsics_t), is_numpy = _to_torch(depth, extrinsics, intrinsics)
    _check_matrices(extrinsics_t, intrinsics_t)
    points_cam = depth_map_to_camera_points(depth_t, intrinsics_t)
    height, width = depth_t.shape[-2:]
    points_world = camera_to_world_points(points_cam.flatten(-3, -2), extrinsics_t)
    points_world = points_world.reshape(points_world.shape[:-2] + (height, width, 3))
    return _back(points_world, is_numpy, _float_dtype(depth, extrinsics, intrinsics) if is_numpy else None)


def unproject_depth_map_to_point_map(depth_map: Array, extrinsics_cam: Array, intrinsics_cam: Array) -> np.ndarray:
    """World point maps of a sequence of depth maps as the reference computes them (accepts numpy or torch).

    Camera points are formed in float32 and moved to the world in float64, so the result is float64 like the
    reference's; `depth_map_to_world_points` is the dtype-preserving equivalent.

    Args:
        depth_map: [S, H, W, 1] or [S, H, W].
        extrinsics_cam: [S, 3, 4] camera-from-world.
        intrinsics_cam: [S, 3, 3].

    Returns:
        [S, H, W, 3] float64 numpy world points.
    """
    depth, extrinsics, intrinsics = (_to_numpy(a) for a in (depth_map, extrinsics_cam, intrinsics_cam))
    if depth.ndim == 4 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 3 or extrinsics.shape[0] != depth.shape[0] or intrinsics.shape[0] != depth.shape[0]:
        raise ValueError(
            f"expected depth [S, H, W(, 1)], extrinsics [S, 3, 4], intrinsics [S, 3, 3]; got "
            f"{depth_map.shape}, {extrinsics_cam.shape}, {intrinsics_cam.shape}"
        )
    return np.stack([depth_to_world_coords_points(*frame)[0] for frame in zip(depth, extrinsics, intrinsics)])


def depth_to_cam_coords_points(depth_map: np.ndarray, intrinsic: np.ndarray) -> np.ndarray:
    """[H, W] depth map and [3, 3] intrinsics to [H, W, 3] float32 camera points (numpy)."""
    return depth_map_to_camera_points(np.asarray(depth_map), np.asarray(intrinsic)).astype(np.float32)


def depth_to_world_coords_points(
    depth_map: np.ndarray, extrinsic: np.ndarray, intrinsic: np.ndarray, eps: float = _MIN_DEPTH
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[H, W] depth map to world points [H, W, 3] (float64), float32 camera points [H, W, 3] and valid mask [H, W]
    (depth > eps), as the reference returns them."""
    depth_map = np.asarray(depth_map)
    points_cam = depth_to_cam_coords_points(depth_map, intrinsic)
    extrinsic = np.asarray(extrinsic, dtype=np.float64)
    points_world = camera_to_world_points(points_cam.reshape(-1, 3).astype(np.float64), extrinsic)
    return points_world.reshape(points_cam.shape), points_cam, depth_map > eps


# --- the reference's batched projection helpers (torch, its layouts) ------------------------------------------------


def project_world_points_to_camera_points_batch(
    world_points: torch.Tensor, cam_extrinsics: torch.Tensor
) -> torch.Tensor:
    """Move point maps into their cameras.

    Args:
        world_points: [B, S, H, W, 3] world points.
        cam_extrinsics: [B, S, 3, 4] camera-from-world.

    Returns:
        [B, S, H, W, 3] camera points.
    """
    points = world_points.flatten(2, 3)  # [B, S, H*W, 3]
    moved = world_to_camera_points(points, cam_extrinsics)
    return moved.reshape(world_points.shape)


def img_from_cam(
    cam_intrinsics: torch.Tensor,
    cam_points: torch.Tensor,
    distortion_params: torch.Tensor | None = None,
    default: float = 0.0,
) -> torch.Tensor:
    """Pixels of camera points, in the reference's layout.

    Args:
        cam_intrinsics: [B, 3, 3].
        cam_points: [B, 3, N] camera-space points (columns).
        distortion_params: optional [B, K] coefficients, K = 1, 2 or 4.
        default: the value NaNs (points at z = 0) are replaced with.

    Returns:
        [B, N, 2] pixel coordinates.
    """
    points = cam_points.transpose(1, 2)
    normalized = points[..., :2] / points[..., 2:3]
    if distortion_params is not None:
        normalized = normalized + distortion_offsets(normalized, distortion_params)
    homogeneous = torch.cat((normalized, torch.ones_like(normalized[..., :1])), dim=-1)
    pixels = (homogeneous @ cam_intrinsics.transpose(1, 2))[..., :2]
    return torch.nan_to_num(pixels, nan=default)


def cam_from_img(
    pred_tracks: torch.Tensor, intrinsics: torch.Tensor, extra_params: torch.Tensor | None = None
) -> torch.Tensor:
    """Normalised image coordinates of pixels (inverse of `img_from_cam` up to depth).

    Args:
        pred_tracks: [B, N, 2] pixel coordinates.
        intrinsics: [B, 3, 3] zero-skew intrinsics.
        extra_params: optional [B, K] distortion coefficients, removed by `iterative_undistortion`.

    Returns:
        [B, N, 2] normalised (undistorted) coordinates `(x / z, y / z)`.
    """
    principal_point = intrinsics[:, None, :2, 2]
    focal = torch.diagonal(intrinsics[:, :2, :2], dim1=-2, dim2=-1)[:, None, :]
    normalized = (pred_tracks - principal_point) / focal
    if extra_params is not None:
        normalized = iterative_undistortion(extra_params, normalized)
    return normalized
