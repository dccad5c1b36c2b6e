"""Synthetic bundle-adjustment problems with known answers, for tests and benchmarks.

Cameras sit on a ring around a cloud of points and look at its centre; each point is seen by a window of
consecutive frames (all frames when `track_length` is None). Everything is numpy float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vggt.utils.geometry import project_points

IMAGE_HEIGHT, IMAGE_WIDTH = 480, 640
FOCAL = 500.0
CAMERA_DISTANCE = 4.0
RING_ARC_DEGREES = 90.0
POINT_CLOUD_RADIUS = 1.0


@dataclass
class SyntheticScene:
    """Ground truth and noisy observations. extrinsics [S, 3, 4], intrinsics [S, 3, 3], points3d [N, 3],
    tracks [S, N, 2] (noisy; outliers where `outlier_mask`), mask [S, N], outlier_mask [S, N]."""

    extrinsics: np.ndarray
    intrinsics: np.ndarray
    points3d: np.ndarray
    tracks: np.ndarray
    mask: np.ndarray
    outlier_mask: np.ndarray
    image_size: tuple[int, int]


def look_at_extrinsics(centers: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[S, 3, 4] OpenCV camera-from-world of cameras at `centers` [S, 3] looking at `target` [3] (world y down)."""
    forward = target - centers
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    down = np.array([0.0, 1.0, 0.0])
    right = np.cross(down, forward)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    true_down = np.cross(forward, right)
    rotation = np.stack((right, true_down, forward), axis=-2)  # rows: camera axes in world
    translation = -np.einsum("sij,sj->si", rotation, centers)
    return np.concatenate((rotation, translation[..., None]), axis=-1)


def make_scene(
    num_frames: int = 10,
    num_points: int = 300,
    noise_px: float = 1.0,
    outlier_ratio: float = 0.0,
    track_length: int | None = None,
    seed: int = 0,
) -> SyntheticScene:
    rng = np.random.default_rng(seed)
    angles = np.deg2rad(np.linspace(-RING_ARC_DEGREES / 2, RING_ARC_DEGREES / 2, num_frames))
    heights = rng.uniform(-0.3, 0.3, num_frames)
    centers = np.stack((CAMERA_DISTANCE * np.sin(angles), heights, -CAMERA_DISTANCE * np.cos(angles)), axis=-1)
    extrinsics = look_at_extrinsics(centers, np.zeros(3))
    intrinsics = np.tile(
        np.array([[FOCAL, 0, IMAGE_WIDTH / 2], [0, FOCAL, IMAGE_HEIGHT / 2], [0, 0, 1.0]]), (num_frames, 1, 1)
    )
    points = rng.uniform(-POINT_CLOUD_RADIUS, POINT_CLOUD_RADIUS, (num_points, 3))

    pixels, depth = project_points(points, extrinsics, intrinsics)  # [S, N, 2], [S, N]
    tracks = pixels + rng.normal(0.0, noise_px, pixels.shape)
    mask = depth > 0
    mask &= (tracks[..., 0] >= 0) & (tracks[..., 0] <= IMAGE_WIDTH - 1)
    mask &= (tracks[..., 1] >= 0) & (tracks[..., 1] <= IMAGE_HEIGHT - 1)
    if track_length is not None and track_length < num_frames:
        starts = rng.integers(0, num_frames - track_length + 1, num_points)
        frame_index = np.arange(num_frames)[:, None]
        mask &= (frame_index >= starts[None]) & (frame_index < starts[None] + track_length)

    outliers = mask & (rng.random(mask.shape) < outlier_ratio)
    random_pixels = np.stack(
        (rng.uniform(0, IMAGE_WIDTH - 1, mask.shape), rng.uniform(0, IMAGE_HEIGHT - 1, mask.shape)), axis=-1
    )
    tracks = np.where(outliers[..., None], random_pixels, tracks)
    return SyntheticScene(extrinsics, intrinsics, points, tracks, mask, outliers, (IMAGE_HEIGHT, IMAGE_WIDTH))


def random_rotations(num: int, angle_degrees: float, rng: np.random.Generator) -> np.ndarray:
    """[num, 3, 3] rotations by `angle_degrees` about random axes (Rodrigues)."""
    axes = rng.normal(size=(num, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    angle = np.deg2rad(angle_degrees)
    cross = np.zeros((num, 3, 3))
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -axes[:, 2], axes[:, 1], -axes[:, 0]
    cross = cross - cross.transpose(0, 2, 1)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def perturb(
    scene: SyntheticScene,
    rotation_degrees: float = 2.0,
    translation_fraction: float = 0.05,
    focal_fraction: float = 0.05,
    point_fraction: float = 0.03,
    seed: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Perturbed (extrinsics, intrinsics, points3d): every camera rotated by `rotation_degrees`, translations and
    focal lengths scaled by 1 +- the fractions, points moved by `point_fraction` of the scene extent."""
    rng = np.random.default_rng(seed)
    frames = scene.extrinsics.shape[0]
    rotation = random_rotations(frames, rotation_degrees, rng) @ scene.extrinsics[:, :, :3]
    translation = scene.extrinsics[:, :, 3]
    direction = rng.normal(size=translation.shape)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    translation = translation + translation_fraction * np.linalg.norm(translation, axis=-1, keepdims=True) * direction
    extrinsics = np.concatenate((rotation, translation[..., None]), axis=-1)
    intrinsics = scene.intrinsics.copy()
    focal_scale = 1 + focal_fraction * rng.choice([-1.0, 1.0], frames)
    intrinsics[:, 0, 0] *= focal_scale
    intrinsics[:, 1, 1] *= focal_scale
    extent = np.linalg.norm(scene.points3d.max(0) - scene.points3d.min(0))
    points = scene.points3d + point_fraction * extent * rng.normal(size=scene.points3d.shape) / np.sqrt(3)
    return extrinsics, intrinsics, points


def relative_rotation_errors(extrinsics: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Angles in degrees between the relative rotations R_i R_j^T of all frame pairs i < j; [S (S - 1) / 2]."""
    first, second = np.triu_indices(extrinsics.shape[0], k=1)

    def relative(rotations):
        return rotations[first] @ rotations[second].transpose(0, 2, 1)

    difference = relative(extrinsics[:, :, :3]) @ relative(reference[:, :, :3]).transpose(0, 2, 1)
    cosine = np.clip((np.trace(difference, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    return np.rad2deg(np.arccos(cosine))


def mean_reprojection_error(extrinsics, intrinsics, points3d, tracks, mask) -> float:
    """Mean pixel distance between projections and tracks over the observations in `mask`."""
    pixels, _ = project_points(points3d, extrinsics, intrinsics)
    return float(np.linalg.norm(pixels - tracks, axis=-1)[mask].mean())
