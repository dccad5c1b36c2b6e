"""Linear (DLT) triangulation of tracks seen by known cameras."""

from __future__ import annotations

import torch

# Points must be seen by this many frames to be triangulated.
MIN_VIEWS = 2


def triangulate_tracks(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, tracks: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares DLT triangulation of every track from the frames where it is observed.

    Args:
        extrinsics: [S, 3, 4] camera-from-world.
        intrinsics: [S, 3, 3].
        tracks: [S, N, 2] pixels.
        mask: [S, N] bool, observed.

    Returns:
        points [N, 3] world points and valid [N] bool (seen at least twice, finite, in front of the observing
        cameras).
    """
    projection = intrinsics.double() @ extrinsics.double()  # [S, 3, 4]
    pixels = torch.where(mask[..., None], tracks.double(), torch.zeros_like(tracks, dtype=torch.float64))
    weight = mask.double()[..., None]  # [S, N, 1]
    # Each observation gives two rows: x P_3 - P_1 and y P_3 - P_2.
    rows_x = pixels[..., 0:1] * projection[:, None, 2] - projection[:, None, 0]  # [S, N, 4]
    rows_y = pixels[..., 1:2] * projection[:, None, 2] - projection[:, None, 1]
    system = torch.cat((rows_x * weight, rows_y * weight), dim=0).transpose(0, 1)  # [N, 2S, 4]
    # Rows are normalised so that far and near cameras weigh alike.
    system = system / system.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(system.dtype).tiny)
    _, _, vh = torch.linalg.svd(system)
    homogeneous = vh[:, -1]  # [N, 4]
    points = homogeneous[:, :3] / homogeneous[:, 3:]

    depth = (
        torch.einsum("sij,nj->sni", extrinsics.double()[..., :3], points)[..., 2] + extrinsics.double()[:, None, 2, 3]
    )
    in_front = ((depth > 0) | ~mask).all(dim=0)
    valid = (mask.sum(dim=0) >= MIN_VIEWS) & torch.isfinite(points).all(dim=-1) & in_front
    return points.to(tracks.dtype), valid
