"""Synthetic scenes: exact depth on the analytic surfaces, consistent cameras, speed, determinism."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vggt.data.scene import load_scene
from vggt.data.synthetic import generate_scene, sample_layout, write_synthetic_dataset
from vggt.utils.geometry import project_points, unproject_depth_map_to_point_map

NUM_FRAMES, HEIGHT, WIDTH = 8, 56, 70
# Generous bound: the scene renders in about 0.2 s; this only catches a per-pixel Python loop.
MAX_SECONDS = 3.0


@pytest.fixture(scope="module")
def layout():
    return sample_layout(np.random.default_rng(5))


@pytest.fixture(scope="module")
def scene(layout):
    return generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=5, layout=layout)


def test_shapes_and_cameras(scene):
    assert scene.images.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3) and scene.images.dtype == np.uint8
    assert scene.depths.shape == (NUM_FRAMES, HEIGHT, WIDTH) and scene.depths.dtype == np.float32
    rotations = scene.extrinsics[:, :, :3]
    np.testing.assert_allclose(
        rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rotations.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0)
    np.testing.assert_allclose(scene.intrinsics[:, :2, 2], np.broadcast_to([WIDTH / 2, HEIGHT / 2], (NUM_FRAMES, 2)))
    # Most pixels see a surface; every camera sees the scene centre in front of it.
    assert (scene.depths > 0).mean() > 0.7
    pixels, depth = project_points(np.array([[0.0, 0.0, 0.4]]), scene.extrinsics, scene.intrinsics)
    assert (depth > 0).all()
    assert (np.abs(pixels[:, 0, 0] - WIDTH / 2) < WIDTH / 3).all() and (
        np.abs(pixels[:, 0, 1] - HEIGHT / 2) < HEIGHT / 3
    ).all()
    # Cameras move along the arc: distinct centres.
    centres = -np.einsum("sji,sj->si", rotations, scene.extrinsics[:, :, 3])
    assert np.linalg.norm(centres[1:] - centres[:-1], axis=-1).min() > 0.01


def test_unprojected_depth_lies_on_the_analytic_surfaces(scene, layout):
    points = unproject_depth_map_to_point_map(scene.depths, scene.extrinsics, scene.intrinsics)
    valid = scene.depths > 0
    distance = layout.surface_distance(points[valid])
    # float32 depth of a few metres: relative precision ~1e-7.
    assert distance.max() < 1e-5
    # Perturbing the cameras moves the points off the surfaces: the check is not vacuous.
    moved = scene.extrinsics.copy()
    moved[:, :, 3] += 0.05
    off = unproject_depth_map_to_point_map(scene.depths, moved, scene.intrinsics)[valid]
    assert np.median(layout.surface_distance(off)) > 1e-3


def test_reprojection_between_frames_is_consistent(scene):
    """World points seen by frame 0 land in frame 1 where frame 1's depth (and colour) agree."""
    points = unproject_depth_map_to_point_map(scene.depths[:1], scene.extrinsics[:1], scene.intrinsics[:1])[0]
    valid = scene.depths[0] > 0
    world = points[valid]
    pixels, depth = project_points(world, scene.extrinsics[1], scene.intrinsics[1])
    cols, rows = np.round(pixels[:, 0]).astype(int), np.round(pixels[:, 1]).astype(int)
    inside = (depth > 0) & (cols >= 0) & (cols < WIDTH) & (rows >= 0) & (rows < HEIGHT)
    assert inside.mean() > 0.3
    seen_depth = scene.depths[1][rows[inside], cols[inside]]
    relative = np.abs(seen_depth - depth[inside]) / depth[inside]
    visible = relative < 0.02  # the rest is occluded in frame 1 or lies on a depth edge
    assert visible.mean() > 0.6
    assert np.median(relative) < 0.01
    # Solid textures: matching pixels have similar colours, far more than random pairs do.
    colour_0 = scene.images[0][valid][inside][visible].astype(float)
    colour_1 = scene.images[1][rows[inside], cols[inside]][visible].astype(float)
    matched = np.abs(colour_0 - colour_1).mean()
    shuffled = np.abs(colour_0 - np.random.default_rng(0).permutation(colour_1)).mean()
    assert matched < 0.5 * shuffled


def test_deterministic_and_fast():
    start = time.perf_counter()
    first = generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=3)
    elapsed = time.perf_counter() - start
    assert elapsed < MAX_SECONDS
    second = generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=3)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.depths, second.depths)
    other = generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=4)
    assert not np.array_equal(first.extrinsics, other.extrinsics)


def test_write_synthetic_dataset(tmp_path):
    paths = write_synthetic_dataset(tmp_path, num_scenes=2, num_frames=3, height=28, width=42, seed=7)
    assert [p.name for p in paths] == ["scene_0000", "scene_0001"]
    loaded = load_scene(paths[1])
    expected = generate_scene(3, 28, 42, seed=8)
    np.testing.assert_array_equal(loaded.images, expected.images)
    np.testing.assert_array_equal(loaded.depths, expected.depths)
    np.testing.assert_allclose(loaded.extrinsics, expected.extrinsics)


def test_rejects_empty_request():
    with pytest.raises(ValueError, match="at least one frame"):
        generate_scene(0, HEIGHT, WIDTH)
