"""Point clouds from predictions: the confident pixels of depth or point maps, the tracked points of bundle
adjustment, and depth maps resampled onto the original photos."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from vggt.errors import InputError
from vggt.export.colmap import Observations
from vggt.pipeline.options import DEFAULT_CONF_PERCENTILE, DEFAULT_MAX_POINTS
from vggt.utils.geometry import depth_map_to_world_points, pixel_grid
from vggt.utils.load_fn import PreprocessTransform

if TYPE_CHECKING:
    from vggt.pipeline.inference import Predictions

# Seed of the random subsampling to `max_points`, so that runs are repeatable.
POINT_SUBSAMPLE_SEED = 0
# The point selection visits this many frames at a time; the confidence percentile is exact over up to this many
# valid pixels (a seeded subsample beyond: 2^26 float32 values are 256 MB).
SELECTION_CHUNK_FRAMES = 16
EXACT_PERCENTILE_MAX_VALUES = 2**26
# Bundle-adjusted points seen fewer times than this are left out of the COLMAP model.
MIN_TRACK_OBSERVATIONS = 2
# Background masks (as the reference's demo): near-black pixels have R + G + B below BLACK_SUM_BELOW, near-white
# pixels have every channel above WHITE_CHANNEL_ABOVE (8-bit colours).
BLACK_SUM_BELOW = 16
WHITE_CHANNEL_ABOVE = 240


class PointCloud(NamedTuple):
    """N coloured points and where they were seen: points [N, 3] float32 world coordinates, colors [N, 3] uint8,
    observations (image index and ORIGINAL-pixel coordinates of each sighting)."""

    points: np.ndarray
    colors: np.ndarray
    observations: Observations


def empty_cloud() -> PointCloud:
    """A cloud of no points."""
    no_observations = Observations(np.zeros(0), np.zeros(0), np.zeros((0, 2)))
    return PointCloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), no_observations)


@dataclass(frozen=True)
class PointSelection:
    """Which pixels `select_points` turns into the cloud; the keywords of `select_points` of the same names.

    Attributes:
        conf_percentile: drop the least confident X % of the valid pixels. max_points: at most this many points.
        frames: indices of the frames whose pixels are used; None: all.
        mask_black_background, mask_white_background: drop near-black / near-white pixels.
    """

    conf_percentile: float = DEFAULT_CONF_PERCENTILE
    max_points: int | None = DEFAULT_MAX_POINTS
    frames: tuple[int, ...] | None = None
    mask_black_background: bool = False
    mask_white_background: bool = False

    def keywords(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def select_points(
    world_points: np.ndarray | Callable[[slice], np.ndarray],
    confidence: np.ndarray,
    images: np.ndarray,
    transforms: Sequence[PreprocessTransform],
    conf_percentile: float = DEFAULT_CONF_PERCENTILE,
    max_points: int | None = DEFAULT_MAX_POINTS,
    seed: int = POINT_SUBSAMPLE_SEED,
    frames: Sequence[int] | None = None,
    mask_black_background: bool = False,
    mask_white_background: bool = False,
    chunk_frames: int = SELECTION_CHUNK_FRAMES,
) -> PointCloud:
    """Pick the confident pixels of S point maps as a point cloud.

    A pixel is valid when its point and confidence are finite, it lies on the original photo (not on
    padding) and its frame is one of `frames` (default: all). Valid pixels whose confidence is below the
    `conf_percentile`-th percentile of the valid confidences are dropped, then near-black and near-white
    pixels if asked (`background_pixels`); if more than `max_points` remain, `max_points` of them are drawn
    at random (seeded). So the cloud has min(max_points, kept) points.

    The frames are visited `chunk_frames` at a time, so memory stays bounded for thousands of frames (arrays may
    be memory-mapped); the percentile is exact up to EXACT_PERCENTILE_MAX_VALUES valid pixels, and taken on a
    seeded subsample of them beyond.

    Args:
        world_points: [S, H, W, 3], or a function giving the points of a slice of frames ([k, H, W, 3]).
        confidence: [S, H, W]; images: [S, H, W, 3] uint8 colours.
        transforms: S preprocessing transforms (to map pixels back to the original photos).
        frames: frame indices in [0, S); None: all frames.

    Returns:
        points [N, 3] float32, colours [N, 3] uint8, and the pixel each point came from (original coordinates).
    """
    if not 0 <= conf_percentile < 100:
        raise InputError("{conf_percentile} must be in [0, 100), got {value}", value=conf_percentile)
    if max_points is not None and max_points < 1:
        raise InputError("{max_points} must be at least 1, got {value}", value=max_points)
    points_of = world_points if callable(world_points) else (lambda chunk: world_points[chunk])
    num_frames = confidence.shape[0]
    chunks = [slice(i, min(i + chunk_frames, num_frames)) for i in range(0, num_frames, chunk_frames)]
    in_frames = frame_mask(num_frames, frames)

    def valid_pixels(chunk: slice) -> tuple[np.ndarray, np.ndarray]:
        points = np.asarray(points_of(chunk))
        conf = np.asarray(confidence[chunk])
        valid = np.isfinite(points).all(-1) & np.isfinite(conf) & in_frames[chunk, None, None]
        return valid & on_photo_mask(transforms[chunk], conf.shape[1:]), points

    threshold = _confidence_threshold(chunks, valid_pixels, confidence, conf_percentile, seed)

    def kept_pixels(chunk: slice) -> tuple[np.ndarray, np.ndarray]:
        valid, points = valid_pixels(chunk)
        if threshold is not None:
            valid &= np.asarray(confidence[chunk]) >= threshold
        if mask_black_background or mask_white_background:
            colors = np.asarray(images[chunk])
            valid &= ~background_pixels(colors, mask_black_background, mask_white_background)
        return valid, points

    counts = [int(kept_pixels(chunk)[0].sum()) for chunk in chunks] if len(chunks) > 1 else None
    return _gather(chunks, kept_pixels, counts, images, transforms, max_points, seed)


def _confidence_threshold(chunks, valid_pixels, confidence, conf_percentile: float, seed: int) -> float | None:
    """The `conf_percentile`-th percentile of the valid pixels' confidences (None when nothing is dropped)."""
    if conf_percentile <= 0:
        return None
    values = [np.asarray(confidence[chunk])[valid_pixels(chunk)[0]] for chunk in chunks]
    total = sum(len(v) for v in values)
    if total == 0:
        return None
    if total > EXACT_PERCENTILE_MAX_VALUES:
        rng = np.random.default_rng(seed)
        fraction = EXACT_PERCENTILE_MAX_VALUES / total
        values = [v[rng.random(len(v)) < fraction] for v in values]
    return float(np.percentile(np.concatenate(values), conf_percentile))


def _gather(chunks, kept_pixels, counts, images, transforms, max_points: int | None, seed: int) -> PointCloud:
    """The kept pixels of every chunk (or `max_points` of them, drawn at random) as a point cloud."""
    parts = []
    offset, chosen = 0, None
    for index, chunk in enumerate(chunks):
        keep, points = kept_pixels(chunk)
        flat = np.flatnonzero(keep)
        if index == 0:
            total = len(flat) if counts is None else sum(counts)
            if max_points is not None and total > max_points:
                chosen = np.sort(np.random.default_rng(seed).choice(total, size=max_points, replace=False))
        if chosen is not None:
            flat = flat[chosen[(chosen >= offset) & (chosen < offset + len(flat))] - offset]
        offset += int(keep.sum())
        frame, row, col = np.unravel_index(flat, keep.shape)
        colors = np.asarray(images[chunk])[frame, row, col]
        parts.append((points[frame, row, col], colors, frame + chunk.start, row, col))
    frame = np.concatenate([p[2] for p in parts])
    row, col = np.concatenate([p[3] for p in parts]), np.concatenate([p[4] for p in parts])
    xy = np.empty((len(frame), 2), dtype=np.float64)
    for i in np.unique(frame):
        in_frame = frame == i
        xy[in_frame] = transforms[i].input_to_original(
            np.stack([col[in_frame], row[in_frame]], axis=-1).astype(np.float64)
        )
    observations = Observations(point_index=np.arange(len(frame)), image_index=frame, xy=xy)
    points = np.concatenate([p[0] for p in parts]).astype(np.float32).reshape(-1, 3)
    colors = np.concatenate([p[1] for p in parts]).astype(np.uint8).reshape(-1, 3)
    return PointCloud(points, colors, observations)


def on_photo_mask(transforms: Sequence[PreprocessTransform], input_hw: tuple[int, int]) -> np.ndarray:
    """[k, H, W] bool: the model-input pixels of each of k frames that lie on its photo (not on padding)."""
    grid = pixel_grid(*input_hw).numpy()  # [H, W, 2] (x, y)
    masks = []
    for transform in transforms:
        original_xy = transform.input_to_original(grid)
        orig_w, orig_h = transform.original_size
        masks.append(
            (original_xy >= -0.5).all(-1) & (original_xy[..., 0] < orig_w - 0.5) & (original_xy[..., 1] < orig_h - 0.5)
        )
    return np.stack(masks) if masks else np.zeros((0, *input_hw), dtype=bool)


def frame_mask(num_frames: int, frames: Sequence[int] | None) -> np.ndarray:
    """[S] bool: True for the frames listed in `frames` (all when None); InputError for an index out of range."""
    if frames is None:
        return np.ones(num_frames, dtype=bool)
    indices = np.asarray(list(frames), dtype=np.int64).reshape(-1)
    outside = indices[(indices < 0) | (indices >= num_frames)]
    if len(outside):
        raise InputError(
            "{frames} must be frame indices in 0..{last}, got {values}", last=num_frames - 1, values=outside.tolist()
        )
    mask = np.zeros(num_frames, dtype=bool)
    mask[indices] = True
    return mask


def background_pixels(images: np.ndarray, black: bool, white: bool) -> np.ndarray:
    """[S, H, W] bool: near-black pixels (if `black`) and near-white pixels (if `white`) of `images` [S, H, W, 3]."""
    colors = images.astype(np.int32)
    mask = np.zeros(images.shape[:-1], dtype=bool)
    if black:
        mask |= colors.sum(-1) < BLACK_SUM_BELOW
    if white:
        mask |= (colors > WHITE_CHANNEL_ABOVE).all(-1)
    return mask


def dense_cloud(
    predictions: Predictions,
    extrinsics: np.ndarray,
    model_intrinsics: np.ndarray,
    transforms: Sequence[PreprocessTransform],
    source: str,
    selection: PointSelection,
) -> PointCloud:
    """The dense cloud of `predictions`: `select_points` on the depth maps unprojected with the cameras (`source`
    "depth"; extrinsics [S, 3, 4] and intrinsics [S, 3, 3] on the model grid) or on the point head's maps
    ("pointmap"), coloured by the model input. The depth is unprojected one chunk of frames at a time."""
    if source == "depth":

        def world_points(chunk: slice) -> np.ndarray:
            depth = np.asarray(predictions.depth[chunk])
            return depth_map_to_world_points(depth, extrinsics[chunk], model_intrinsics[chunk])

        confidence = predictions.depth_conf
    else:
        world_points, confidence = predictions.world_points, predictions.world_points_conf
    colors_hw = predictions.images.transpose(0, 2, 3, 1)
    return select_points(world_points, confidence, colors_hw, transforms, **selection.keywords())


def tracked_points(
    points3d: np.ndarray,
    tracks: np.ndarray,
    mask: np.ndarray,
    images: np.ndarray,
    transforms: Sequence[PreprocessTransform],
    min_observations: int = MIN_TRACK_OBSERVATIONS,
) -> PointCloud:
    """Bundle-adjusted points with their tracks, for the COLMAP model.

    Args:
        points3d: [N, 3]; tracks: [S, N, 2] pixels of the model input; mask: [S, N] observations kept.
        images: [S, H, W, 3] uint8, for the colours (mean over each point's observations).
        transforms: S preprocessing transforms, to express the observations in original pixels.

    Returns:
        points [M, 3], colours [M, 3] uint8 and observations, for the M points seen at least `min_observations` times.
    """
    keep = np.flatnonzero(mask.sum(0) >= min_observations)
    mask = mask[:, keep]
    frame, column = np.nonzero(mask)  # row-major: grouped by frame
    pixels = tracks[:, keep][frame, column]
    height, width = images.shape[1:3]
    x = np.clip(np.round(pixels[:, 0]).astype(int), 0, width - 1)
    y = np.clip(np.round(pixels[:, 1]).astype(int), 0, height - 1)
    sums = np.zeros((len(keep), 3))
    np.add.at(sums, column, images[frame, y, x].astype(np.float64))
    colors = np.round(sums / mask.sum(0)[:, None]).astype(np.uint8)
    xy = np.empty((len(frame), 2))
    for i, transform in enumerate(transforms):
        xy[frame == i] = transform.input_to_original(pixels[frame == i].astype(np.float64))
    observations = Observations(point_index=column, image_index=frame, xy=xy)
    return PointCloud(points3d[keep].astype(np.float32), colors, observations)


def depth_at_original_resolution(depth: np.ndarray, transform: PreprocessTransform) -> np.ndarray:
    """Resample a depth map [H, W] of the model input onto the original photo [height, width].

    Each photo pixel takes the depth of the nearest model-input pixel (no blending across depth edges);
    photo pixels the model did not see (cropped away) and non-finite depths get 0.
    """
    width, height = transform.original_size
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    # The transform is a per-axis scale and shift, so rows and columns map independently.
    cols = np.round(transform.original_to_input(np.stack([xs, np.zeros_like(xs)], -1))[:, 0]).astype(np.int64)
    rows = np.round(transform.original_to_input(np.stack([np.zeros_like(ys), ys], -1))[:, 1]).astype(np.int64)
    col_ok = (cols >= 0) & (cols < depth.shape[1])
    row_ok = (rows >= 0) & (rows < depth.shape[0])
    resampled = depth[np.clip(rows, 0, depth.shape[0] - 1)][:, np.clip(cols, 0, depth.shape[1] - 1)]
    resampled = np.where(row_ok[:, None] & col_ok[None, :] & np.isfinite(resampled), resampled, 0.0)
    return resampled.astype(np.float32)
