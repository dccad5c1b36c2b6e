"""Synthetic windowed reconstructions with known answers, for tests and benchmarks of window alignment (not part
of the package: `vggt reconstruct` never imports it).

A sequence is a ring of cameras (the last ones come back next to the first) looking across the ring at random
depths; camera 0 is the world frame. Each window "predicts" its frames as a forward pass would: in its own
coordinates (a random similarity of the world), with Gaussian point noise that shrinks with a random confidence,
and with a fraction of outlier points, either at a wrong depth along their pixel's ray ("depth") or anywhere in
the scene's bounding box ("random"). Outliers get confidences from the same distribution, so weights alone
cannot find them. Everything is numpy float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from vggt.utils.geometry import depth_map_to_world_points
from vggt.utils.similarity import Similarity, rotation_exp

RING_RADIUS = 3.0
DEPTH_RANGE = (2.0, 6.0)
FOCAL_FRACTION = 0.8  # focal length as a fraction of the image width
CONFIDENCE_RANGE = (1.0, 10.0)
# Wrong-depth outliers move their point along its ray by a factor drawn from this range.
OUTLIER_DEPTH_FACTOR = (0.5, 1.5)
# Window coordinates: log-uniform scale in this range, any rotation, translation of this standard deviation.
WINDOW_SCALE_RANGE = (0.2, 5.0)
WINDOW_TRANSLATION_STD = 2.0

OutlierKind = Literal["depth", "random"]


@dataclass
class SyntheticSequence:
    """extrinsics [S, 3, 4] camera-from-world (camera 0 the identity), intrinsics [S, 3, 3], depths [S, H, W],
    world_points [S, H, W, 3]."""

    extrinsics: np.ndarray
    intrinsics: np.ndarray
    depths: np.ndarray
    world_points: np.ndarray


@dataclass
class SyntheticWindow:
    """One window's prediction. frames: its frame indices. window_from_world: the true similarity into its
    coordinates. extrinsics [F, 3, 4] and points [F, H, W, 3] in those coordinates (points noisy, with
    outliers), confidence [F, H, W], outliers [F, H, W] bool."""

    frames: range
    window_from_world: Similarity
    extrinsics: np.ndarray
    points: np.ndarray
    confidence: np.ndarray
    outliers: np.ndarray


def make_sequence(num_frames: int, height: int = 24, width: int = 32, seed: int = 0) -> SyntheticSequence:
    """Cameras on a ring of radius RING_RADIUS, a full turn over the sequence, each looking at its centre."""
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(num_frames) / num_frames
    # Camera k sits at angle k on the ring and faces its centre; camera 0 is the world frame.
    centres = RING_RADIUS * np.stack((np.sin(angles), np.zeros_like(angles), 1 - np.cos(angles)), axis=-1)
    rotations = rotation_exp(np.stack((np.zeros_like(angles), -angles, np.zeros_like(angles)), axis=-1))
    translations = -np.einsum("sij,sj->si", rotations, centres)
    extrinsics = np.concatenate((rotations, translations[..., None]), axis=-1)
    focal = FOCAL_FRACTION * width
    intrinsic = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1.0]])
    intrinsics = np.tile(intrinsic, (num_frames, 1, 1))
    depths = rng.uniform(*DEPTH_RANGE, (num_frames, height, width))
    world_points = depth_map_to_world_points(depths, extrinsics, intrinsics)
    return SyntheticSequence(extrinsics, intrinsics, depths, world_points)


def random_similarity(rng: np.random.Generator) -> Similarity:
    """Log-uniform scale in WINDOW_SCALE_RANGE, uniformly random rotation, Gaussian translation."""
    quaternion = rng.normal(size=4)
    quaternion /= np.linalg.norm(quaternion)
    angle = 2 * np.arccos(np.clip(abs(quaternion[3]), 0, 1))
    axis = quaternion[:3] * np.sign(quaternion[3] or 1.0)
    rotvec = axis / max(np.linalg.norm(axis), 1e-12) * angle
    scale = np.exp(rng.uniform(*np.log(WINDOW_SCALE_RANGE)))
    return Similarity(scale, rotation_exp(rotvec), rng.normal(0.0, WINDOW_TRANSLATION_STD, 3))


def predict_window(
    sequence: SyntheticSequence,
    frames: range,
    noise: float,
    outlier_ratio: float,
    outlier_kind: OutlierKind,
    rng: np.random.Generator,
) -> SyntheticWindow:
    """One window's noisy prediction of `frames`: point noise per axis `noise * depth / sqrt(confidence)`."""
    index = np.asarray(frames)
    points, depths = sequence.world_points[index], sequence.depths[index]
    confidence = rng.uniform(*CONFIDENCE_RANGE, depths.shape)
    noisy = points + rng.normal(size=points.shape) * (noise * depths / np.sqrt(confidence))[..., None]
    outliers = rng.random(depths.shape) < outlier_ratio
    if outlier_kind == "depth":
        extrinsics = sequence.extrinsics[index]
        centres = -np.einsum("sji,sj->si", extrinsics[:, :, :3], extrinsics[:, :, 3])[:, None, None]
        factor = rng.uniform(*OUTLIER_DEPTH_FACTOR, depths.shape)[..., None]
        wrong = centres + (points - centres) * factor
    else:
        flat = sequence.world_points.reshape(-1, 3)
        wrong = rng.uniform(flat.min(0), flat.max(0), points.shape)
    noisy = np.where(outliers[..., None], wrong, noisy)
    window_from_world = random_similarity(rng)
    return SyntheticWindow(
        frames,
        window_from_world,
        window_from_world.apply_to_extrinsics(sequence.extrinsics[index]),
        window_from_world.apply(noisy),
        confidence,
        outliers,
    )
