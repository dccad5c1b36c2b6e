"""Lens distortion of normalised image points, in COLMAP's camera models, and its numerical inverse.

Points are normalised image coordinates `(x / z, y / z)`. The number of coefficients picks the model:
1 `SIMPLE_RADIAL` (k1), 2 `RADIAL` (k1, k2), 4 `OPENCV` (k1, k2, p1, p2).
"""

from __future__ import annotations

import numpy as np
import torch

DISTORTION_MODELS = {1: "SIMPLE_RADIAL", 2: "RADIAL", 4: "OPENCV"}


def _as_tensor(x) -> torch.Tensor:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else torch.as_tensor(x)


def distortion_offsets(points: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """The shift `distort(p) - p` of normalised points.

    Args:
        points: [..., N, 2] normalised points.
        coefficients: [..., K] per camera, K = 1, 2 or 4 (see the module docstring).

    Returns:
        [..., N, 2] offsets.
    """
    count = coefficients.shape[-1]
    if count not in DISTORTION_MODELS:
        raise ValueError(
            f"distortion takes 1, 2 or 4 coefficients ({', '.join(DISTORTION_MODELS.values())}), got {count}"
        )
    x, y = points[..., 0], points[..., 1]
    k = coefficients[..., None, :]  # [..., 1, K], broadcast over the N points
    r2 = x * x + y * y
    radial = k[..., 0] * r2
    if count >= 2:
        radial = radial + k[..., 1] * r2 * r2
    dx, dy = x * radial, y * radial
    if count == 4:
        p1, p2 = k[..., 2], k[..., 3]
        dx = dx + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = dy + 2 * p2 * x * y + p1 * (r2 + 2 * y * y)
    return torch.stack((dx, dy), dim=-1)


def apply_distortion(extra_params, u, v) -> tuple[torch.Tensor, torch.Tensor]:
    """Distort normalised points given as separate coordinates (the reference's layout).

    Args:
        extra_params: [B, K] coefficients, K = 1, 2 or 4 (numpy or torch).
        u, v: [B, N] normalised x and y.

    Returns:
        Distorted (u, v), each [B, N] torch tensors.
    """
    params, u, v = _as_tensor(extra_params), _as_tensor(u), _as_tensor(v)
    offsets = distortion_offsets(torch.stack((u, v), dim=-1), params)
    return u + offsets[..., 0], v + offsets[..., 1]


def iterative_undistortion(
    params,
    tracks_normalized,
    max_iterations: int = 100,
    max_step_norm: float = 1e-10,
    rel_step_size: float = 1e-6,
) -> torch.Tensor:
    """Undistort normalised points by Newton's method with a central-difference Jacobian (as COLMAP does).

    Args:
        params: [B, K] distortion coefficients.
        tracks_normalized: [B, N, 2] distorted normalised points.
        max_iterations: Newton steps at most.
        max_step_norm: stop once every squared step is below this.
        rel_step_size: finite-difference step relative to each coordinate.

    Returns:
        [B, N, 2] undistorted normalised points.
    """
    coefficients, target = _as_tensor(params), _as_tensor(tracks_normalized)
    estimate = target.clone()
    eps = torch.finfo(estimate.dtype).eps

    def distort(p: torch.Tensor) -> torch.Tensor:
        return p + distortion_offsets(p, coefficients)

    for _ in range(max_iterations):
        residual = target - distort(estimate)
        steps = torch.clamp(estimate.abs() * rel_step_size, min=eps)  # [B, N, 2]
        columns = []
        for axis in range(2):
            delta = torch.zeros_like(estimate)
            delta[..., axis] = steps[..., axis]
            columns.append((distort(estimate + delta) - distort(estimate - delta)) / (2 * steps[..., axis, None]))
        jacobian = torch.stack(columns, dim=-1)  # [B, N, 2 (output), 2 (input)]
        step = torch.linalg.solve(jacobian, residual)
        estimate = estimate + step
        if torch.max((step * step).sum(dim=-1)) < max_step_norm:
            break
    return estimate


def single_undistortion(params, tracks_normalized) -> torch.Tensor:
    """One fixed-point step of undistortion, `p - offset(p)`: a first-order inverse for small distortion.

    Args:
        params: [B, K] distortion coefficients.
        tracks_normalized: [B, N, 2] distorted normalised points.

    Returns:
        [B, N, 2] approximately undistorted points.
    """
    points = _as_tensor(tracks_normalized)
    return points - distortion_offsets(points, _as_tensor(params))
