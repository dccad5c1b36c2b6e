"""Rotation matrices and unit quaternions.

Quaternions are scalar-last, `(x, y, z, w)`, as in the VGGT pose encoding and SciPy's `Rotation.as_quat`.
All functions take torch tensors with any leading batch dimensions.
"""

from __future__ import annotations

import torch

# Below this value a candidate denominator in `mat_to_quat` is clamped; the candidate is then never the one picked.
_MIN_CANDIDATE_NORM = 0.1


def quat_to_mat(quaternions: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from quaternions.

    Args:
        quaternions: [..., 4] scalar-last `(x, y, z, w)`; need not be unit length (they are normalised here).

    Returns:
        [..., 3, 3] rotation matrices.
    """
    if quaternions.shape[-1] != 4:
        raise ValueError(f"quaternions must have shape [..., 4], got {tuple(quaternions.shape)}")
    x, y, z, w = torch.unbind(quaternions, dim=-1)
    # 2 / |q|^2 folds the normalisation into the usual unit-quaternion formula.
    s = 2.0 / (quaternions * quaternions).sum(dim=-1)
    matrix = torch.stack(
        (
            1 - s * (y * y + z * z),
            s * (x * y - z * w),
            s * (x * z + y * w),
            s * (x * y + z * w),
            1 - s * (x * x + z * z),
            s * (y * z - x * w),
            s * (x * z - y * w),
            s * (y * z + x * w),
            1 - s * (x * x + y * y),
        ),
        dim=-1,
    )
    return matrix.reshape(quaternions.shape[:-1] + (3, 3))


def mat_to_quat(matrix: torch.Tensor) -> torch.Tensor:
    """Quaternions from rotation matrices, standardised to a non-negative real part.

    Each of `4w^2, 4x^2, 4y^2, 4z^2` is a linear function of the diagonal; the largest one gives the best
    conditioned way to recover the other three components from the off-diagonal entries.

    Args:
        matrix: [..., 3, 3] rotation matrices.

    Returns:
        [..., 4] unit quaternions `(x, y, z, w)` with `w >= 0`.
    """
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must have shape [..., 3, 3], got {tuple(matrix.shape)}")
    batch_shape = matrix.shape[:-2]
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(matrix.reshape(batch_shape + (9,)), dim=-1)

    # twice |w|, |x|, |y|, |z|
    twice_abs = _safe_sqrt(
        torch.stack(
            (
                1.0 + m00 + m11 + m22,
                1.0 + m00 - m11 - m22,
                1.0 - m00 + m11 - m22,
                1.0 - m00 - m11 + m22,
            ),
            dim=-1,
        )
    )

    # Row k holds (w, x, y, z) scaled by 4 times component k: one candidate quaternion per row.
    scaled_candidates = torch.stack(
        (
            torch.stack((twice_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01), dim=-1),
            torch.stack((m21 - m12, twice_abs[..., 1] ** 2, m10 + m01, m02 + m20), dim=-1),
            torch.stack((m02 - m20, m10 + m01, twice_abs[..., 2] ** 2, m12 + m21), dim=-1),
            torch.stack((m10 - m01, m20 + m02, m21 + m12, twice_abs[..., 3] ** 2), dim=-1),
        ),
        dim=-2,
    )
    candidates = scaled_candidates / (2.0 * twice_abs[..., None].clamp(min=_MIN_CANDIDATE_NORM))

    best = twice_abs.argmax(dim=-1)  # [...]
    index = best[..., None, None].expand(batch_shape + (1, 4))
    wxyz = torch.gather(candidates, dim=-2, index=index).squeeze(-2)
    return standardize_quaternion(wxyz[..., [1, 2, 3, 0]])


def standardize_quaternion(quaternions: torch.Tensor) -> torch.Tensor:
    """Flip [..., 4] scalar-last quaternions so that the real part `w` is non-negative (q and -q are one rotation)."""
    return torch.where(quaternions[..., 3:4] < 0, -quaternions, quaternions)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product `a * b` of [..., 4] scalar-last quaternions: the rotation `b` followed by `a`."""
    ax, ay, az, aw = torch.unbind(a, dim=-1)
    bx, by, bz, bw = torch.unbind(b, dim=-1)
    return torch.stack(
        (
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ),
        dim=-1,
    )


def quat_conjugate(quaternions: torch.Tensor) -> torch.Tensor:
    """Conjugate of [..., 4] scalar-last quaternions: the inverse rotation for unit quaternions."""
    return torch.cat((-quaternions[..., :3], quaternions[..., 3:]), dim=-1)


def rotation_angle(rotation: torch.Tensor) -> torch.Tensor:
    """Rotation angle in radians, in [0, pi], of [..., 3, 3] rotation matrices (e.g. of a relative rotation)."""
    trace = rotation.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
    return torch.acos(((trace - 1.0) / 2.0).clamp(-1.0, 1.0))


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt(max(x, 0)) with a zero (not infinite) gradient where x <= 0."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))
