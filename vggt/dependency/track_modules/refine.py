"""Fine refinement of coarse tracks on image patches around them (VGGSfM)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Patches of (2 * PATCH_RADIUS + 1) pixels a side are cut around each coarse track position.
PATCH_RADIUS = 15


def refine_track(
    images: Tensor,
    fine_fnet: nn.Module,
    fine_tracker: nn.Module,
    coarse_pred: Tensor,
    compute_score: bool = False,
    pradius: int = PATCH_RADIUS,
    sradius: int = 2,
    fine_iters: int = 6,
    chunk: int = 40960,
) -> tuple[Tensor, Tensor | None]:
    """Refine tracks by tracking each one within the patches cut around its coarse positions.

    Args:
        images: [B, S, 3, H, W] with H == W (patch corners are clamped to one range).
        fine_fnet: patch encoder ([P, 3, p, p] -> [P, C, p, p]); fine_tracker: the fine `BaseTrackerPredictor`.
        coarse_pred: [B, S, N, 2] coarse tracks in pixels; frame 0 holds the query points.
        compute_score: not supported (the reference never computes it); must be False.
        pradius: patch radius; sradius: unused (the score's search radius); fine_iters: refinement iterations.
        chunk: patches encoded at a time (negative: all at once).

    Returns:
        refined tracks [B, S, N, 2] and None (no score).
    """
    if compute_score:
        raise NotImplementedError("refine_track computes no score; pass compute_score=False")
    batch, frames, num_tracks, _ = coarse_pred.shape
    height = images.shape[-2]
    size = 2 * pradius + 1
    with torch.no_grad():
        windows = images.reshape(batch * frames, 3, *images.shape[-2:]).unfold(2, size, 1).unfold(3, size, 1)

    corner_int = coarse_pred.floor().int()
    fraction = coarse_pred - corner_int
    corners = corner_int - pradius  # [B, S, N, 2] top-left corners (unclamped)
    clamped = corners.clamp(0, height - size).reshape(batch * frames, num_tracks, 2)
    rows = torch.arange(batch * frames, device=windows.device)[:, None].expand(-1, num_tracks)
    patches = windows[rows, :, clamped[..., 1], clamped[..., 0]].reshape(-1, 3, size, size)
    if chunk < 0:
        features = fine_fnet(patches)
    else:
        features = torch.cat([fine_fnet(part) for part in torch.split(patches, chunk)], dim=0)
    channels = features.shape[1]
    features = features.reshape(batch, frames, num_tracks, channels, size, size).transpose(1, 2)
    features = features.reshape(batch * num_tracks, frames, channels, size, size)

    patch_queries = (fraction[:, 0] + pradius).reshape(batch * num_tracks, 1, 2)
    predictions, _, _, _ = fine_tracker(query_points=patch_queries, fmaps=features, iters=fine_iters, return_feat=True)
    in_patch = predictions[-1].reshape(batch, num_tracks, frames, 2).transpose(1, 2)  # [B, S, N, 2]
    refined = in_patch + corners
    refined[:, 0] = coarse_pred[:, 0]
    return refined, None
