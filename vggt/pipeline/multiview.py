"""Multi-view tracks for the COLMAP model: each point of the cloud, seen again in the other frames.

A point of the dense cloud comes from one pixel of one frame, so on its own it has a track of length one, which
COLMAP's bundle adjuster refuses (every 3D point must be seen at least twice). `multiview_tracks` projects each
point into the frames of the NEIGHBOUR_FRAMES cameras nearest to its own and adds an observation where it lands
on the photo, in front of the camera, on a pixel whose predicted depth agrees with the point's depth there (within
DEPTH_AGREEMENT, relative: the point is not hidden) and whose confidence is at least the lowest confidence of the
cloud's own pixels. The observation is the centre of that pixel (as the source observation is), so the
reprojection errors COLMAP reports are real: they measure how well the predicted depth and cameras agree across
frames. Points seen fewer than MIN_TRACK_OBSERVATIONS times are left out of the COLMAP model (the PLY keeps them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vggt.export.colmap import Observations
from vggt.pipeline.points import MIN_TRACK_OBSERVATIONS, PointCloud, on_photo_mask
from vggt.utils.geometry import project_points
from vggt.utils.load_fn import PreprocessTransform

# A point counts as seen by a pixel when their depths differ by at most this fraction of the pixel's depth.
DEPTH_AGREEMENT = 0.02
# Points are projected this many at a time (bounded memory for clouds of millions of points).
POINT_CHUNK = 1 << 18
# A point is looked for in the frames of this many cameras nearest to its own (camera centres), so that the work
# grows with the frames times this, not with the frames squared (thousands of frames of a windowed run).
NEIGHBOUR_FRAMES = 16


def multiview_tracks(
    cloud: PointCloud,
    depth: np.ndarray,
    depth_conf: np.ndarray,
    extrinsics: np.ndarray,
    model_intrinsics: np.ndarray,
    transforms: Sequence[PreprocessTransform],
    min_observations: int = MIN_TRACK_OBSERVATIONS,
    depth_agreement: float = DEPTH_AGREEMENT,
    neighbour_frames: int = NEIGHBOUR_FRAMES,
) -> PointCloud:
    """The points of `cloud` seen in at least `min_observations` frames, with all their observations.

    Args:
        cloud: points [N, 3], colours and one observation per point (the pixel it came from, original pixels).
        depth, depth_conf: [S, H, W] predicted depth and confidence on the model grid (may be memory-mapped).
        extrinsics: [S, 3, 4] camera-from-world; model_intrinsics: [S, 3, 3] on the model grid.
        transforms: S preprocessing transforms (model-input pixels <-> original pixels).
        neighbour_frames: each point is looked for in the frames of this many cameras nearest to its own.

    Returns:
        The kept points, their colours, and observations (the source one first in each track) in original pixels.
    """
    points, colors, source = cloud
    num_frames, height, width = depth.shape[:3]
    source_frame = source.image_index[np.argsort(source.point_index)]
    threshold = _lowest_source_confidence(source, depth_conf, transforms)
    on_photo = on_photo_mask(transforms, (height, width))
    looks_into = nearest_frames(extrinsics, neighbour_frames)  # [S source, S target]
    found_point, found_frame, found_xy = [source.point_index], [source.image_index], [source.xy]
    for frame in range(num_frames):
        candidates = np.flatnonzero(looks_into[source_frame, frame])
        if not len(candidates):
            continue
        frame_depth = np.asarray(depth[frame]).reshape(height, width)
        usable = on_photo[frame] & np.isfinite(frame_depth) & (frame_depth > 0)
        usable &= np.asarray(depth_conf[frame]) >= threshold
        for start in range(0, len(candidates), POINT_CHUNK):
            chunk = candidates[start : start + POINT_CHUNK]
            pixels, z = project_points(points[chunk].astype(np.float64), extrinsics[frame], model_intrinsics[frame])
            col, row = np.round(pixels[:, 0]), np.round(pixels[:, 1])
            inside = (z > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
            index = np.flatnonzero(inside)
            col, row = col[index].astype(np.int64), row[index].astype(np.int64)
            seen = usable[row, col] & (
                np.abs(z[index] - frame_depth[row, col]) <= depth_agreement * frame_depth[row, col]
            )
            index, col, row = index[seen], col[seen], row[seen]
            found_point.append(chunk[index])
            found_frame.append(np.full(len(index), frame))
            found_xy.append(transforms[frame].input_to_original(np.stack([col, row], -1).astype(np.float64)))
    point_index = np.concatenate(found_point)
    counts = np.bincount(point_index, minlength=len(points))
    kept = np.flatnonzero(counts >= min_observations)
    renumber = np.full(len(points), -1)
    renumber[kept] = np.arange(len(kept))
    rows = renumber[point_index] >= 0
    observations = Observations(
        point_index=renumber[point_index][rows],
        image_index=np.concatenate(found_frame)[rows],
        xy=np.concatenate(found_xy)[rows],
    )
    return PointCloud(points[kept], colors[kept], observations)


def nearest_frames(extrinsics: np.ndarray, count: int) -> np.ndarray:
    """[S, S] bool: row i marks the `count` frames (not i itself) whose camera centres are nearest to frame i's,
    from extrinsics [S, 3, 4] camera-from-world."""
    rotation, translation = extrinsics[:, :, :3].astype(np.float64), extrinsics[:, :, 3].astype(np.float64)
    centres = -np.einsum("sji,sj->si", rotation, translation)
    distance = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    nearest = np.argsort(distance, axis=1, kind="stable")[:, : max(0, min(count, len(centres) - 1))]
    marks = np.zeros(distance.shape, dtype=bool)
    np.put_along_axis(marks, nearest, True, axis=1)
    return marks


def _lowest_source_confidence(
    source: Observations, depth_conf: np.ndarray, transforms: Sequence[PreprocessTransform]
) -> float:
    """The lowest confidence of the model-grid pixels the cloud's points came from (-inf for an empty cloud)."""
    lowest = np.inf
    height, width = depth_conf.shape[1:3]
    for frame in np.unique(source.image_index):
        xy = transforms[frame].original_to_input(source.xy[source.image_index == frame])
        col = np.clip(np.round(xy[:, 0]).astype(np.int64), 0, width - 1)
        row = np.clip(np.round(xy[:, 1]).astype(np.int64), 0, height - 1)
        conf = np.asarray(depth_conf[frame])[row, col]
        conf = conf[np.isfinite(conf)]
        if len(conf):
            lowest = min(lowest, float(conf.min()))
    return lowest if np.isfinite(lowest) else -np.inf
