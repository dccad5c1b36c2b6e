"""Our track loss, in both averaging modes (the reference's track loss is unfinished: its training code
raises NotImplementedError).

Ground-truth correspondences come from depth and cameras (`build_track_targets`); the loss is the L1 pixel
error of visible ground-truth positions over the tracker's iterations (gamma-weighted) plus a binary
cross-entropy on visibility, each averaged per sample first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from training.losses.config import TrackLossConfig
from training.losses.reduction import iteration_weights, per_sample_mean
from vggt.utils.geometry import camera_to_world_points, pixels_to_camera_points, project_points

# Probabilities are clamped this far from 0 and 1 before the visibility cross-entropy.
PROBABILITY_EPS = 1e-6


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
